//! GitOps mode: an organization declared in a YAML file in Git.

pub mod manifest;
mod yaml;

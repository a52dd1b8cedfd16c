//! Reading a new password so that it stays out of shell history: stdin or a prompt.

use std::io::Read;

use crate::error::{CliError, CliResult};

/// More than any accepted password (128 characters of up to 4 bytes); the rest is not read.
const MAX_PASSWORD_INPUT: u64 = 4096;

/// Where `user reset-password` takes the new password from.
#[derive(Debug)]
pub enum PasswordSource {
    /// Given on the command line (kept in shell history).
    Argument(String),
    /// The first line of standard input.
    Stdin,
    /// Typed at a prompt on the terminal, without echo, twice.
    Prompt,
}

/// Reads the new password from `source`.
pub fn read(source: PasswordSource) -> CliResult<String> {
    match source {
        PasswordSource::Argument(password) => Ok(password),
        PasswordSource::Stdin => first_line(std::io::stdin().lock()),
        PasswordSource::Prompt => prompt(),
    }
}

/// The first line of `input`, without its line ending; spaces are kept.
fn first_line(input: impl Read) -> CliResult<String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_PASSWORD_INPUT)
        .read_to_end(&mut bytes)
        .map_err(|err| {
            CliError::Io(format!(
                "cannot read the password from standard input: {err}"
            ))
        })?;
    let text = String::from_utf8(bytes).map_err(|_| CliError::Secret {
        field: "new_password",
        reason: "standard input is not valid UTF-8",
    })?;
    let line = text.split('\n').next().unwrap_or_default();
    Ok(line.strip_suffix('\r').unwrap_or(line).to_owned())
}

/// Asks for the password twice on the terminal, without echo.
fn prompt() -> CliResult<String> {
    let no_terminal = |_| CliError::Secret {
        field: "new_password",
        reason: "no terminal to prompt on; use --new-password-stdin",
    };
    let first = rpassword::prompt_password("new password: ").map_err(no_terminal)?;
    let second = rpassword::prompt_password("repeat the new password: ").map_err(no_terminal)?;
    if first != second {
        return Err(CliError::Secret {
            field: "new_password",
            reason: "the two entries differ; nothing was changed",
        });
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_line_is_the_password() {
        let read = |input: &str| first_line(input.as_bytes()).unwrap();
        assert_eq!(read("Vivid Orbit 42!\n"), "Vivid Orbit 42!");
        assert_eq!(read("Vivid-Orbit-42\r\nsecond line"), "Vivid-Orbit-42");
        assert_eq!(read(""), "");
    }

    #[test]
    fn invalid_utf8_is_refused_without_echo() {
        let err = first_line(&[0xff, 0xfe][..]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid new_password: standard input is not valid UTF-8"
        );
    }
}

//! Real repositories for the transport and reconcile tests: an upstream bare
//! repository fed by pushes from a working repository, served over `file://`
//! or over git's smart HTTP protocol by `git http-backend` on loopback; and
//! test databases on PostgreSQL ([`postgres`]).

#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use git2::{IndexAddOption, Oid, Repository, RepositoryInitOptions, Signature};
use tempfile::TempDir;

pub mod postgres;

/// The name of the served repository under the project root.
pub const REPO_NAME: &str = "org.git";

/// An upstream bare repository and a working repository that pushes to it.
pub struct Upstream {
    dir: TempDir,
    work: Repository,
}

impl Upstream {
    /// An empty upstream repository; its default branch is `main`.
    pub fn new() -> Upstream {
        let dir = tempfile::tempdir().unwrap();
        let mut options = RepositoryInitOptions::new();
        options.bare(true).initial_head("main");
        Repository::init_opts(dir.path().join("srv").join(REPO_NAME), &options).unwrap();
        let mut options = RepositoryInitOptions::new();
        options.initial_head("main");
        let work = Repository::init_opts(dir.path().join("work"), &options).unwrap();
        Upstream { dir, work }
    }

    /// The directory served as git's project root.
    pub fn project_root(&self) -> PathBuf {
        self.dir.path().join("srv")
    }

    /// The upstream bare repository.
    pub fn bare_path(&self) -> PathBuf {
        self.project_root().join(REPO_NAME)
    }

    /// The `file://` URL of the upstream repository.
    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare_path().display())
    }

    fn signature() -> Signature<'static> {
        Signature::now("Test Author", "author@example.com").unwrap()
    }

    /// Writes each `(path, content)` in the working tree and returns the
    /// tree of the index with them added.
    fn stage(&self, files: &[(&str, &[u8])]) -> Oid {
        let workdir = self.work.workdir().unwrap();
        for (path, content) in files {
            let file = workdir.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, content).unwrap();
        }
        let mut index = self.work.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        index.write_tree().unwrap()
    }

    /// Commits `content` at `path` on `main` (not pushed).
    pub fn commit(&self, path: &str, content: &[u8]) -> Oid {
        self.commit_files(&[(path, content)])
    }

    /// Commits every `(path, content)` on `main` in one commit (not pushed).
    pub fn commit_files(&self, files: &[(&str, &[u8])]) -> Oid {
        let path = files.first().map_or("nothing", |(path, _)| *path);
        let tree = self.work.find_tree(self.stage(files)).unwrap();
        let parent = self.work.head().ok().map(|h| h.peel_to_commit().unwrap());
        let parents: Vec<_> = parent.iter().collect();
        let sig = Self::signature();
        self.work
            .commit(
                Some("HEAD"),
                &sig,
                &sig,
                &format!("set {path}"),
                &tree,
                &parents,
            )
            .unwrap()
    }

    /// Commits `content` at `path` on `main` and pushes `main`.
    pub fn commit_and_push(&self, path: &str, content: &[u8]) -> String {
        self.commit_files_and_push(&[(path, content)])
    }

    /// Commits every `(path, content)` on `main` in one commit and pushes `main`.
    pub fn commit_files_and_push(&self, files: &[(&str, &[u8])]) -> String {
        let oid = self.commit_files(files);
        self.push("refs/heads/main:refs/heads/main");
        oid.to_string()
    }

    /// Replaces the last commit of `main` by one with `content` at `path`,
    /// and force-pushes `main`: the old tip is no longer an ancestor.
    pub fn amend_and_force_push(&self, path: &str, content: &[u8]) -> String {
        let head = self.work.head().unwrap().peel_to_commit().unwrap();
        let tree = self.work.find_tree(self.stage(&[(path, content)])).unwrap();
        let parents: Vec<_> = head.parents().collect();
        let parents: Vec<_> = parents.iter().collect();
        let sig = Self::signature();
        let oid = self
            .work
            .commit(
                None,
                &sig,
                &sig,
                &format!("rewrite {path}"),
                &tree,
                &parents,
            )
            .unwrap();
        self.work
            .reference("refs/heads/main", oid, true, "rewrite")
            .unwrap();
        self.push("+refs/heads/main:refs/heads/main");
        oid.to_string()
    }

    /// Creates an annotated tag `name` on `commit` and pushes it.
    pub fn tag_and_push(&self, name: &str, commit: &str) {
        let target = self
            .work
            .find_object(Oid::from_str(commit).unwrap(), None)
            .unwrap();
        self.work
            .tag(name, &target, &Self::signature(), "release", false)
            .unwrap();
        self.push(&format!("refs/tags/{name}:refs/tags/{name}"));
    }

    /// Pushes `refspec` to the upstream repository over the local transport.
    pub fn push(&self, refspec: &str) {
        self.push_to(&self.bare_path(), refspec);
    }

    /// Publishes `main` in one more bare repository, `name`, beside the upstream one.
    pub fn publish_copy(&self, name: &str) {
        let path = self.project_root().join(name);
        Repository::init_bare(&path).unwrap();
        self.push_to(&path, "refs/heads/main:refs/heads/main");
    }

    /// Moves the upstream repository away: its URL then names nothing.
    pub fn take_offline(&self) {
        std::fs::rename(self.bare_path(), self.offline_path()).unwrap();
    }

    /// Puts the upstream repository back after [`Upstream::take_offline`].
    pub fn bring_online(&self) {
        std::fs::rename(self.offline_path(), self.bare_path()).unwrap();
    }

    fn offline_path(&self) -> PathBuf {
        self.dir.path().join("offline.git")
    }

    fn push_to(&self, bare: &Path, refspec: &str) {
        let mut remote = self.work.remote_anonymous(bare.to_str().unwrap()).unwrap();
        remote.push(&[refspec], None).unwrap();
    }
}

/// A smart HTTP server on 127.0.0.1 running `git http-backend` as CGI.
pub struct GitHttpServer {
    port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves `project_root`, without authentication.
    pub fn start(project_root: &Path) -> GitHttpServer {
        Self::start_with_token(project_root, None)
    }

    /// Serves `project_root`; with a token, every request must carry HTTP
    /// basic auth `x-access-token:TOKEN`, else it gets a 401.
    pub fn start_with_token(project_root: &Path, token: Option<&str>) -> GitHttpServer {
        Self::start_on(project_root, token, 0)
    }

    /// Like [`GitHttpServer::start_with_token`], on `port` (0: any free port),
    /// such as the port of a server stopped before.
    pub fn start_on(project_root: &Path, token: Option<&str>, port: u16) -> GitHttpServer {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler = Handler {
            backend: http_backend_path(),
            root: project_root.to_owned(),
            expected_auth: token
                .map(|t| format!("Basic {}", base64(format!("x-access-token:{t}").as_bytes()))),
            log: Arc::clone(&log),
        };
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let handler = Arc::new(handler);
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let handler = Arc::clone(&handler);
                    thread::spawn(move || handler.serve(stream));
                }
            })
        };
        GitHttpServer {
            port,
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the served repository.
    pub fn url(&self) -> String {
        self.url_of(REPO_NAME)
    }

    /// The URL of the repository `name` under the project root.
    pub fn url_of(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    /// Every request so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `git http-backend`, found through `git --exec-path`.
fn http_backend_path() -> PathBuf {
    let output = Command::new("git").arg("--exec-path").output().unwrap();
    assert!(output.status.success(), "git --exec-path failed");
    let exec_path = String::from_utf8(output.stdout).unwrap();
    let backend = Path::new(exec_path.trim()).join("git-http-backend");
    assert!(
        backend.exists(),
        "no git-http-backend at {}",
        backend.display()
    );
    backend
}

struct Handler {
    backend: PathBuf,
    root: PathBuf,
    expected_auth: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Handler {
    fn serve(&self, mut stream: TcpStream) {
        let Some(request) = read_request(&stream) else {
            return;
        };
        self.log.lock().unwrap().push(format!(
            "{} {}?{}",
            request.method, request.path, request.query
        ));
        let response = match &self.expected_auth {
            Some(expected) if request.header("authorization") != Some(expected.as_str()) => {
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
                  Content-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_vec()
            }
            _ => self.run_backend(&request),
        };
        let _ = stream.write_all(&response);
        let _ = stream.flush();
        let _ = stream.shutdown(Shutdown::Both);
    }

    /// Runs the CGI program and turns its output into an HTTP response.
    fn run_backend(&self, request: &Request) -> Vec<u8> {
        let mut command = Command::new(&self.backend);
        command
            .env("GIT_PROJECT_ROOT", &self.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", "HTTP/1.1")
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("REQUEST_METHOD", &request.method)
            .env("PATH_INFO", &request.path)
            .env("QUERY_STRING", &request.query)
            .env("CONTENT_TYPE", request.header("content-type").unwrap_or(""))
            .env("CONTENT_LENGTH", request.body.len().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in &request.headers {
            let name = name.to_ascii_uppercase().replace('-', "_");
            if name != "CONTENT_TYPE" && name != "CONTENT_LENGTH" && name != "AUTHORIZATION" {
                command.env(format!("HTTP_{name}"), value);
            }
        }
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let body = request.body.clone();
        let writer = thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let mut output = Vec::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut output)
            .unwrap();
        child.wait().unwrap();
        writer.join().unwrap();
        cgi_to_http(&output)
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: Vec::new(),
    };
    if request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        request.body = read_chunked(&mut reader)?;
    } else if let Some(length) = request.header("content-length") {
        let mut body = vec![0; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        request.body = body;
    }
    Some(request)
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line).ok()?;
        let size_hex = size_line.trim().split(';').next()?;
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        if size == 0 {
            // The empty trailer line.
            let mut end = String::new();
            reader.read_line(&mut end).ok()?;
            return Some(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).ok()?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf).ok()?;
    }
}

/// Turns CGI output (headers, a blank line, the body) into an HTTP response,
/// taking the status from the `Status:` header.
fn cgi_to_http(output: &[u8]) -> Vec<u8> {
    let (head, body) = match find(output, b"\r\n\r\n") {
        Some(i) => (&output[..i], &output[i + 4..]),
        None => match find(output, b"\n\n") {
            Some(i) => (&output[..i], &output[i + 2..]),
            None => (output, &[][..]),
        },
    };
    let head = String::from_utf8_lossy(head);
    let mut status = "200 OK".to_owned();
    let mut headers = String::new();
    for line in head.lines() {
        match line.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => {
                status = value.trim().to_owned();
            }
            Some(_) => {
                headers.push_str(line.trim_end());
                headers.push_str("\r\n");
            }
            None => {}
        }
    }
    let mut response = format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Standard base64 with padding, for the basic auth header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Creates a bare repository at `path` whose `main` holds one commit with
/// `content` at `file` (a top-level name), written straight into the object
/// database; returns the commit id.
pub fn bare_repo_with_file(path: &Path, file: &str, content: &[u8]) -> String {
    let mut options = RepositoryInitOptions::new();
    options.bare(true).initial_head("main");
    let repo = Repository::init_opts(path, &options).unwrap();
    let blob = repo.blob(content).unwrap();
    let mut tree = repo.treebuilder(None).unwrap();
    tree.insert(file, blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = Signature::now("Test Author", "author@example.com").unwrap();
    let commit = repo
        .commit(Some("refs/heads/main"), &sig, &sig, "initial", &tree, &[])
        .unwrap();
    commit.to_string()
}

//! A real headless browser for the console's tests: Debian's chromium driven by chromedriver over the W3C
//! WebDriver protocol (plain JSON over HTTP, spoken here with ureq). `scripts/test.sh` installs both.
#![allow(dead_code)]

use super::{Proc, free_port, wait_port};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    _driver: Proc,
    base: String,
    session: String,
    http: ureq::Agent,
    pub shots: PathBuf,
}

fn binary(candidates: &[&str]) -> String {
    candidates.iter().find(|p| Path::new(p).exists()).map(|p| p.to_string()).unwrap_or_else(|| {
        panic!("none of {candidates:?} exists: run scripts/test.sh, which installs chromium and chromium-driver")
    })
}

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session with its own profile in `dir`.
    /// Screenshots go to `shots`.
    pub fn start(dir: &Path, shots: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new(binary(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]))
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Proc(driver);
        wait_port(port);
        let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let base = format!("http://127.0.0.1:{port}");
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        std::fs::create_dir_all(shots).unwrap();
        // The flags this machine needs (no sandbox as root, and no background connections to the
        // outside, which the closed network refuses).
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1200,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut res = http.post(format!("{base}/session")).send_json(&caps).expect("chromedriver answers");
        let v: Value = res.body_mut().read_json().unwrap();
        let session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {v}")).to_owned();
        Browser { _driver: driver, base, session, http, shots: shots.to_owned() }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut res = match (method, body) {
            ("GET", _) => self.http.get(&url).call(),
            ("DELETE", _) => self.http.delete(&url).call(),
            (_, body) => self.http.post(&url).send_json(body.unwrap_or_else(|| json!({}))),
        }
        .expect("chromedriver answers");
        let v: Value = res.body_mut().read_json().unwrap();
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    /// The first element matching a CSS selector, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let v = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits (up to 30 s) for an element matching `css` whose text satisfies `ok`; returns its text.
    pub fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            if let Some(e) = self.find(css) {
                last = self.call("GET", &format!("/element/{e}/text"), None).as_str().unwrap_or("").to_owned();
                if ok(&last) {
                    return last;
                }
            }
            assert!(Instant::now() < deadline, "no {css} with the expected text; last seen {last:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(Instant::now() < deadline, "no element {css} appeared");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Clicks the element; the pages redraw every 2 s, so an element found just before a redraw may be
    /// gone when clicked ("stale element reference"): find it again and retry.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let e = self.wait(css);
            let v = self.call("POST", &format!("/element/{e}/click"), None);
            if v.get("error").is_none() {
                return;
            }
            assert!(Instant::now() < deadline, "cannot click {css}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css);
        self.call("POST", &format!("/element/{e}/value"), Some(json!({"text": text})));
    }

    /// Runs a script in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    /// Writes a PNG of the viewport as `shots/NAME.png` and returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None).as_str().expect("a screenshot").to_owned();
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, base64_decode(&b64)).unwrap();
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).call();
    }
}

/// Standard base64 (what WebDriver returns screenshots in).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

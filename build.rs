//! Build script: front-codes the common-password list into `OUT_DIR`.
//!
//! `src/core/common_passwords.txt` (one password a line, `#` comments) stays
//! the one source; the Worker embeds it sorted and front-coded instead — each
//! entry is the length of the prefix it shares with the entry before, then the
//! rest of its bytes, then `\n` — which is 60 % of the text's size and
//! compresses to 60 % of the text's gzip. `core::password::is_common` reads
//! it; a unit test there holds the decoded list to the text.
#![allow(clippy::panic)] // a build script reports a failure by panicking

use std::path::Path;

const LIST: &str = "src/core/common_passwords.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-changed=build.rs");
    let dir = std::env::var("OUT_DIR").unwrap_or_else(|e| panic!("OUT_DIR: {e}"));
    let path = Path::new(&dir).join("common_passwords.fc");
    std::fs::write(&path, common_passwords()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The common-password list, sorted and front-coded.
fn common_passwords() -> Vec<u8> {
    let text = std::fs::read_to_string(LIST).unwrap_or_else(|e| panic!("{LIST}: {e}"));
    let mut words: Vec<&[u8]> =
        text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::as_bytes).collect();
    words.sort_unstable();
    words.dedup();
    let mut out = Vec::with_capacity(text.len());
    let mut prev: &[u8] = &[];
    for w in words {
        let shared = prev.iter().zip(w).take_while(|(a, b)| a == b).count();
        let shared = u8::try_from(shared).unwrap_or_else(|_| panic!("{LIST}: an entry longer than 255 bytes"));
        out.push(shared);
        out.extend_from_slice(&w[usize::from(shared)..]);
        out.push(b'\n');
        prev = w;
    }
    out
}

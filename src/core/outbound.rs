//! Outbound HTTP as core describes it: webhook deliveries, email API calls and
//! the sign-in hook are built (and signed) here as plain [`HttpRequest`]s; the
//! edge only sends them and hands back an [`HttpReply`].

/// Largest reply body kept from any outbound call; the rest is discarded.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

/// A `POST` with a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Absolute http(s) URL.
    pub url: String,
    /// Header names (lowercase) and values, besides `content-type: application/json`.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes, as signed.
    pub body: String,
    /// Give up waiting for the response head after this long.
    pub timeout_ms: u32,
}

impl HttpRequest {
    /// The value of header `name`, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What came back: the status and (at most [`MAX_REPLY_BYTES`] of) the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// HTTP status.
    pub status: u16,
    /// Body text, possibly truncated.
    pub body: String,
}

impl HttpReply {
    /// 2xx: the only answers that count as delivered. Redirects are not
    /// followed and count as failures (Standard Webhooks).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why an outbound call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// No response head within the request's timeout.
    Timeout,
    /// DNS, connection, TLS or any other network failure.
    Network(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Network(cause) => write!(f, "network error: {cause}"),
        }
    }
}

/// A short, single-line excerpt of `text` for logs and the delivery ledger.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    let mut out: String = text.chars().take(max_chars).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_is_success() {
        for (status, ok) in [(200, true), (204, true), (299, true), (301, false), (404, false), (500, false)] {
            assert_eq!(HttpReply { status, body: String::new() }.is_success(), ok, "{status}");
        }
    }

    #[test]
    fn excerpts_are_short_and_single_line() {
        assert_eq!(excerpt("a\nb", 10), "a b");
        assert_eq!(excerpt("abcdef", 3), "abc…");
    }
}

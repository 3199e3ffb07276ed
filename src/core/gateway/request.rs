//! The request as the gateway reads it: a small synchronous view, so that
//! the decision is written once, in core, and tested natively, while the
//! edge reads a runtime request only where the decision asks (each read
//! there may cross into JavaScript).

/// What the gateway's decision reads of a request. Implementations read
/// lazily: the decision asks for a header only when a rule needs it.
pub trait RequestView {
    /// The method, as sent.
    fn method(&self) -> &str;
    /// The query, without its `?`.
    fn query(&self) -> Option<&str>;
    /// Whether the request has a body (a stream, maybe empty).
    fn has_body(&self) -> bool;
    /// A request header by its lowercase name (`Authorization`, `Cookie`,
    /// the CSRF rule's `Origin`, `Sec-Fetch-Site` and `Upgrade`, a body's
    /// `Content-Length` and `Transfer-Encoding`).
    fn header(&self, name: &str) -> Option<String>;
}

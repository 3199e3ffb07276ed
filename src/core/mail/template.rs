//! Email templates: text with `{link}`, `{code}`, `{email}` and `{brand}`
//! slots, rendered as plain text, as HTML with every value escaped, or turned
//! from a plain-text template into the HTML part.
//!
//! Every value interpolated into HTML goes through [`escape`]: the address,
//! the brand and the link come from users and operators, and an email client
//! renders what it gets.

use super::html::escape;
use super::kind::EmailKind;

/// What fills a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The link with its token (the three link emails).
    Link,
    /// The six-digit code (the code email).
    Code,
    /// The recipient's address.
    Email,
    /// `UI_NAME`.
    Brand,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot(Slot),
}

/// The values of one email's slots.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Values<'a> {
    pub link: &'a str,
    pub code: &'a str,
    pub email: &'a str,
    pub brand: &'a str,
    /// `UI_ACCENT`: the colour of links and the code in derived HTML.
    pub accent: &'a str,
}

impl Values<'_> {
    fn get(&self, slot: Slot) -> &str {
        match slot {
            Slot::Link => self.link,
            Slot::Code => self.code,
            Slot::Email => self.email,
            Slot::Brand => self.brand,
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `raw` for an email of `kind`. A `{name}` made of lowercase
    /// letters and `_` must be a slot the kind knows; other braces are text.
    /// A literal `\n` (as typed on a command line) is a line break.
    pub(crate) fn parse(raw: &str, kind: EmailKind) -> Result<Self, String> {
        let raw = raw.replace("\\n", "\n");
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = raw.as_str();
        while let Some(open) = rest.find('{') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let name_len = after.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(after.len());
            if name_len > 0 && after[name_len..].starts_with('}') {
                let slot = match &after[..name_len] {
                    "link" if kind.link_setting().is_some() => Slot::Link,
                    "code" if kind == EmailKind::EmailOtp => Slot::Code,
                    "email" => Slot::Email,
                    "brand" => Slot::Brand,
                    other => {
                        let known = if kind == EmailKind::EmailOtp {
                            "{code}, {email}, {brand}"
                        } else {
                            "{link}, {email}, {brand}"
                        };
                        return Err(format!("unknown placeholder {{{other}}}; this email knows {known}"));
                    }
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Slot(slot));
                rest = &after[name_len + 1..];
            } else {
                text.push('{');
                rest = after;
            }
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self(pieces))
    }

    /// Whether the template has `slot`.
    pub(crate) fn has(&self, slot: Slot) -> bool {
        self.0.contains(&Piece::Slot(slot))
    }

    /// Whether its text (after `\n` became a line break) holds a control
    /// character: never in a header such as the subject.
    pub(crate) fn has_control(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::Text(t) if t.chars().any(char::is_control)))
    }

    /// As text: values as they are.
    pub(crate) fn render_text(&self, v: &Values<'_>) -> String {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Text(t) => t.as_str(),
                Piece::Slot(s) => v.get(*s),
            })
            .collect()
    }

    /// As an HTML template: its own text kept (it is the operator's HTML),
    /// every value escaped.
    pub(crate) fn render_html(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(s) => out.push_str(&escape(v.get(*s))),
            }
        }
        out
    }

    /// A plain-text template turned into HTML paragraphs: its text escaped,
    /// a blank line a new paragraph, a line break `<br>`; the link a link,
    /// the code set large. The body of the built-in layout.
    pub(crate) fn text_as_html(&self, v: &Values<'_>) -> String {
        let mut out = String::from("<p style=\"margin:0 0 16px\">");
        let mut at_line_start = true;
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => {
                    for (i, para) in t.split("\n\n").enumerate() {
                        if i > 0 {
                            out.push_str("</p>\n<p style=\"margin:0 0 16px\">");
                            at_line_start = true;
                        }
                        for (j, line) in para.split('\n').enumerate() {
                            if j > 0 {
                                out.push_str("<br>\n");
                                at_line_start = true;
                            }
                            // Indentation means nothing in HTML (the code's
                            // is set apart by its style instead).
                            let line = if at_line_start { line.trim_start() } else { line };
                            if !line.is_empty() {
                                at_line_start = false;
                            }
                            out.push_str(&escape(line));
                        }
                    }
                }
                Piece::Slot(Slot::Link) => {
                    let link = escape(v.link);
                    out.push_str(&format!(
                        "<a href=\"{link}\" style=\"color:{accent};word-break:break-all\">{link}</a>",
                        accent = v.accent
                    ));
                    at_line_start = false;
                }
                Piece::Slot(Slot::Code) => {
                    out.push_str(&format!(
                        "<strong style=\"font-family:monospace;font-size:28px;letter-spacing:6px;color:{accent}\">{code}</strong>",
                        accent = v.accent,
                        code = escape(v.code)
                    ));
                    at_line_start = false;
                }
                Piece::Slot(s) => {
                    out.push_str(&escape(v.get(*s)));
                    at_line_start = false;
                }
            }
        }
        out.push_str("</p>");
        // A template ending in a blank line leaves an empty paragraph.
        while let Some(stripped) = out.strip_suffix("\n<p style=\"margin:0 0 16px\"></p>") {
            out.truncate(stripped.len());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: Values<'static> = Values {
        link: "https://app.example/m?a=1&token=t\"x",
        code: "042917",
        email: "<ada>@example.com",
        brand: "Acme & Co",
        accent: "#123456",
    };

    #[test]
    fn text_keeps_values_and_html_escapes_every_one() {
        let t = Template::parse("Hi {email} from {brand}: {link} {not a slot}", EmailKind::MagicLink).unwrap();
        assert_eq!(
            t.render_text(&V),
            "Hi <ada>@example.com from Acme & Co: https://app.example/m?a=1&token=t\"x {not a slot}"
        );
        let html = Template::parse("<b>{email}</b> <a href=\"{link}\">{brand}</a>", EmailKind::MagicLink).unwrap();
        assert_eq!(
            html.render_html(&V),
            "<b>&lt;ada&gt;@example.com</b> <a href=\"https://app.example/m?a=1&amp;token=t&quot;x\">Acme &amp; Co</a>"
        );
    }

    #[test]
    fn text_becomes_paragraphs_with_a_live_link_and_escaped_text() {
        let t = Template::parse("Hello <you>,\n\nOpen:\n{link}\n\nBye\n", EmailKind::MagicLink).unwrap();
        let html = t.text_as_html(&V);
        assert!(html.starts_with("<p style=\"margin:0 0 16px\">Hello &lt;you&gt;,</p>"), "{html}");
        assert!(
            html.contains("Open:<br>\n<a href=\"https://app.example/m?a=1&amp;token=t&quot;x\" style=\"color:#123456;")
        );
        assert!(html.ends_with("Bye<br>\n</p>"), "{html}");
        assert!(!html.contains("<you>"));
        let code = Template::parse("Your code:\n\n    {code}\n", EmailKind::EmailOtp).unwrap().text_as_html(&V);
        assert!(code.contains("<p style=\"margin:0 0 16px\"><strong style=\"font-family:monospace;"), "{code}");
    }

    #[test]
    fn slots_are_checked_against_the_kind() {
        assert!(Template::parse("{code}", EmailKind::MagicLink).is_err());
        assert!(Template::parse("{link}", EmailKind::EmailOtp).is_err());
        assert!(Template::parse("{brand} {email}", EmailKind::EmailOtp).is_ok());
    }
}

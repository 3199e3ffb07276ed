//! The HTML part: escaping, the brand (`UI_NAME`, `UI_LOGO_URL`,
//! `UI_ACCENT`, shared with the hosted pages) and the built-in layout that
//! frames an email's paragraphs.

use url::Url;

/// Default `UI_NAME`.
pub const DEFAULT_BRAND_NAME: &str = "Portcullis";
/// Default `UI_ACCENT`.
pub const DEFAULT_ACCENT: &str = "#2563eb";
/// Longest `UI_NAME` accepted, in characters.
pub const MAX_BRAND_NAME_CHARS: usize = 64;

/// `text` safe in HTML text and in a quoted attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who the emails come from, as the recipient sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    /// `UI_NAME`: the layout's heading and the `{brand}` placeholder.
    pub name: String,
    /// `UI_LOGO_URL`: an image above the heading.
    pub logo_url: Option<Url>,
    /// `UI_ACCENT`: `#rgb` or `#rrggbb`, the colour of the top rule, links
    /// and the code. Only a hex colour is accepted, so it cannot carry CSS.
    pub accent: String,
}

impl Brand {
    /// Reads `UI_NAME`, `UI_LOGO_URL` and `UI_ACCENT` (trimmed, non-empty
    /// values). Errors name the setting.
    pub fn from_lookup(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, (String, String)> {
        let name = match var("UI_NAME") {
            None => DEFAULT_BRAND_NAME.to_string(),
            Some(n) if n.chars().count() <= MAX_BRAND_NAME_CHARS && !n.chars().any(char::is_control) => n,
            Some(_) => {
                return Err((
                    "UI_NAME".into(),
                    format!("must be one line of at most {MAX_BRAND_NAME_CHARS} characters"),
                ))
            }
        };
        let logo_url = match var("UI_LOGO_URL") {
            None => None,
            Some(v) => match Url::parse(&v) {
                Ok(u) if u.scheme() == "https" && u.host_str().is_some() => Some(u),
                _ => return Err(("UI_LOGO_URL".into(), format!("{v:?} must be an https URL of an image"))),
            },
        };
        let accent = match var("UI_ACCENT") {
            None => DEFAULT_ACCENT.to_string(),
            Some(v) if is_hex_colour(&v) => v.to_ascii_lowercase(),
            Some(v) => return Err(("UI_ACCENT".into(), format!("{v:?} must be a hex colour: #rgb or #rrggbb"))),
        };
        Ok(Self { name, logo_url, accent })
    }

    /// The whole HTML document of an email: `body` (HTML paragraphs) under
    /// the brand's heading, in a centred card. `lang` is the language tag
    /// the email is written in; `title` its subject.
    pub(crate) fn layout(&self, lang: &str, title: &str, body: &str) -> String {
        let logo = match &self.logo_url {
            Some(u) => format!(
                "<img src=\"{src}\" alt=\"{alt}\" height=\"40\" style=\"display:block;height:40px;margin:0 0 12px;border:0\">\n",
                src = escape(u.as_str()),
                alt = escape(&self.name)
            ),
            None => String::new(),
        };
        format!(
            "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n</head>\n\
             <body style=\"margin:0;padding:24px 12px;background:#f4f4f5;color:#18181b;\
             font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5\">\n\
             <div style=\"max-width:560px;margin:0 auto;background:#ffffff;border-top:4px solid {accent};\
             border-radius:6px;padding:28px 32px\">\n{logo}\
             <p style=\"margin:0 0 20px;font-size:18px;font-weight:600\">{name}</p>\n{body}\n</div>\n</body>\n</html>\n",
            lang = escape(lang),
            title = escape(title),
            accent = self.accent,
            name = escape(&self.name),
        )
    }
}

fn is_hex_colour(v: &str) -> bool {
    v.strip_prefix('#').is_some_and(|h| matches!(h.len(), 3 | 6) && h.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn brand(pairs: &[(&str, &str)]) -> Result<Brand, (String, String)> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Brand::from_lookup(&move |k: &str| m.get(k).cloned())
    }

    #[test]
    fn escape_covers_text_and_attributes() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn the_layout_carries_the_brand_escaped() {
        let b = brand(&[
            ("UI_NAME", "Acme <Labs>"),
            ("UI_LOGO_URL", "https://cdn.acme.example/logo.png?v=1&x=\"y\""),
            ("UI_ACCENT", "#FF8800"),
        ])
        .unwrap();
        let html = b.layout("fr", "Votre lien", "<p>corps</p>");
        assert!(html.contains("<html lang=\"fr\">"));
        assert!(html.contains("<title>Votre lien</title>"));
        assert!(html.contains("border-top:4px solid #ff8800"));
        assert!(html.contains(">Acme &lt;Labs&gt;</p>"));
        assert!(html.contains("src=\"https://cdn.acme.example/logo.png?v=1&amp;x=%22y%22\""), "{html}");
        assert!(html.contains("alt=\"Acme &lt;Labs&gt;\""));
        assert!(html.contains("<p>corps</p>"));
        let plain = brand(&[]).unwrap().layout("en", "t", "");
        assert!(plain.contains(&format!(">{DEFAULT_BRAND_NAME}</p>")) && !plain.contains("<img"));
    }

    #[test]
    fn brand_settings_are_checked() {
        for (k, v) in [
            ("UI_ACCENT", "red"),
            ("UI_ACCENT", "#12345"),
            ("UI_ACCENT", "#fff;background:url(x)"),
            ("UI_LOGO_URL", "javascript:alert(1)"),
            ("UI_LOGO_URL", "logo.png"),
            ("UI_NAME", "two\nlines"),
        ] {
            assert_eq!(brand(&[(k, v)]).unwrap_err().0, k, "{k}={v}");
        }
        assert_eq!(brand(&[("UI_ACCENT", "#abc")]).unwrap().accent, "#abc");
    }
}

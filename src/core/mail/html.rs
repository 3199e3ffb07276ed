//! The HTML part: escaping and the built-in layout that frames an email's
//! paragraphs under the brand ([`Brand`]: `UI_NAME`, `UI_LOGO_URL`,
//! `UI_ACCENT`, shared with the hosted pages).

use crate::core::brand::Brand;
use crate::core::ui::html::Escape;

/// `text` safe in HTML text and in a quoted attribute value (the pages'
/// escaping, [`Escape`]).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    text.escape_into(&mut out);
    out
}

/// The whole HTML document of an email: `body` (HTML paragraphs) under
/// `brand`'s heading, in a centred card. `lang` is the language tag the
/// email is written in; `title` its subject.
pub(crate) fn layout(brand: &Brand, lang: &str, title: &str, body: &str) -> String {
    let logo = match &brand.logo_url {
        Some(u) => format!(
            "<img src=\"{src}\" alt=\"{alt}\" height=\"40\" style=\"display:block;height:40px;margin:0 0 12px;border:0\">\n",
            src = escape(u.as_str()),
            alt = escape(&brand.name)
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
        accent = brand.accent.hex(),
        name = escape(&brand.name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brand(pairs: &[(&str, &str)]) -> Result<Brand, (String, String)> {
        Brand::from_pairs(pairs)
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
        let html = layout(&b, "fr", "Votre lien", "<p>corps</p>");
        assert!(html.contains("<html lang=\"fr\">"));
        assert!(html.contains("<title>Votre lien</title>"));
        assert!(html.contains("border-top:4px solid #ff8800"));
        assert!(html.contains(">Acme &lt;Labs&gt;</p>"));
        assert!(html.contains("src=\"https://cdn.acme.example/logo.png?v=1&amp;x=%22y%22\""), "{html}");
        assert!(html.contains("alt=\"Acme &lt;Labs&gt;\""));
        assert!(html.contains("<p>corps</p>"));
        let plain = layout(&brand(&[]).unwrap(), "en", "t", "");
        assert!(plain.contains(">Portcullis</p>") && !plain.contains("<img"));
    }
}

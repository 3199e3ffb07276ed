//! HTML built by hand, safely: every interpolated value is escaped.
//!
//! The premise: text reaches a page only through the [`html!`] macro, whose
//! string *literals* are markup written here and whose `{expression}` parts
//! are values — escaped, always, for text and for double-quoted attribute
//! values alike. The only way to splice markup in is a `[fragment]` part,
//! which takes an [`Html`]: a type only this module (and the macro) can
//! make, so a fragment is markup the macro built, never text from a request.
//! There is no "raw" escape hatch taking a `&str`.
//!
//! The escaping replaces `&`, `<`, `>`, `"` and `'` with their character
//! references: in text they cannot open a tag or an entity; in an attribute
//! value written between double quotes (the only kind the templates write)
//! they cannot close it. A unit test holds every template to this with
//! hostile values.

use std::fmt::Write as _;

/// Markup built by [`html!`] (or [`Html::new`] and its pushes); its text
/// is escaped where it came from a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Html(String);

impl Html {
    /// Empty markup.
    pub fn new() -> Self {
        Self(String::new())
    }

    /// Appends markup written in the source (a literal).
    pub fn push_markup(&mut self, markup: &'static str) {
        self.0.push_str(markup);
    }

    /// Appends a value, escaped.
    pub fn push_value(&mut self, value: &(impl Escape + ?Sized)) {
        value.escape_into(&mut self.0);
    }

    /// Appends the pages' stylesheet, as is: a [`super::Css`] is made only
    /// from hex colours and literals.
    pub fn push_css(&mut self, css: &super::Css) {
        self.0.push_str(css.as_str());
    }

    /// Appends a fragment built the same way.
    pub fn push_html(&mut self, fragment: &Html) {
        self.0.push_str(&fragment.0);
    }

    /// The markup.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The markup, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A value that can be written into HTML, escaped.
pub trait Escape {
    /// Writes `self` into `out` with `& < > " '` replaced by references.
    fn escape_into(&self, out: &mut String);
}

impl Escape for str {
    fn escape_into(&self, out: &mut String) {
        for c in self.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
    }
}

impl Escape for String {
    fn escape_into(&self, out: &mut String) {
        self.as_str().escape_into(out);
    }
}

impl<T: Escape + ?Sized> Escape for &T {
    fn escape_into(&self, out: &mut String) {
        (**self).escape_into(out);
    }
}

macro_rules! escape_number {
    ($($t:ty),*) => {$(
        impl Escape for $t {
            fn escape_into(&self, out: &mut String) {
                // Digits and a sign: nothing to escape.
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
escape_number!(u16, u32, u64, usize, i64);

/// Builds [`Html`]: `html!["<p>", {value}, "</p>", [fragment]]` — string
/// literals are markup, `{expr}` is escaped, `[expr]` is an `Html` fragment.
macro_rules! html {
    ($($part:tt),* $(,)?) => {{
        let mut out = $crate::core::ui::html::Html::new();
        $( $crate::core::ui::html::html_part!(out, $part); )*
        out
    }};
}

/// One part of [`html!`].
macro_rules! html_part {
    ($out:ident, $markup:literal) => {
        $out.push_markup($markup)
    };
    ($out:ident, { $value:expr }) => {
        $out.push_value(&$value)
    };
    ($out:ident, [ $fragment:expr ]) => {
        $out.push_html(&$fragment)
    };
}

pub(crate) use html;
pub(crate) use html_part;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn values_are_escaped_and_literals_are_not() {
        let name = r#"<script>alert("x")</script> & 'y'"#;
        let h = html!["<p title=\"", { name }, "\">", { name }, "</p>"];
        assert_eq!(
            h.as_str(),
            "<p title=\"&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;\">\
             &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;</p>"
        );
        let inner = html!["<b>", { "a<b" }, "</b>"];
        let outer = html!["<div>", [inner], { 42u64 }, "</div>"];
        assert_eq!(outer.as_str(), "<div><b>a&lt;b</b>42</div>");
    }

    proptest! {
        #[test]
        fn an_escaped_value_never_holds_markup_characters(value in "\\PC{0,64}") {
            let h = html![{ value }];
            let s = h.as_str();
            prop_assert!(!s.contains(['<', '>', '"', '\'']));
            // Every `&` starts one of the five references.
            for (i, _) in s.match_indices('&') {
                let rest = &s[i..];
                prop_assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].iter().any(|r| rest.starts_with(r)), "{}", s);
            }
        }
    }
}

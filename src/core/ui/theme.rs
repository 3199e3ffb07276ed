//! The pages' colours from `UI_ACCENT`, readable whatever the accent.
//!
//! WCAG 2.2 contrast (1.4.3: 4.5:1 for text, 1.4.11: 3:1 for focus rings and
//! borders) is computed from relative luminance. The accent fills buttons:
//! their text is black or white, whichever contrasts more — one of the two
//! always reaches 4.5:1 (the worst case, a luminance of about 0.18, still
//! gives √21 ≈ 4.58:1). Links and the focus ring sit on the white page: they
//! use the accent darkened (mixed with black) just enough to reach 4.5:1.

pub use crate::core::brand::{Rgb, DEFAULT_ACCENT};

/// The page background.
pub const WHITE: Rgb = Rgb(0xff, 0xff, 0xff);
/// Black.
pub const BLACK: Rgb = Rgb(0, 0, 0);
/// The contrast text needs (WCAG 1.4.3, level AA).
pub const TEXT_CONTRAST: f64 = 4.5;

impl Rgb {
    /// WCAG relative luminance, 0 (black) to 1 (white).
    pub fn luminance(self) -> f64 {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.040_45 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * channel(self.0) + 0.7152 * channel(self.1) + 0.0722 * channel(self.2)
    }

    /// `self` mixed with black: `keep` (0 to 1) of each channel stays.
    fn darkened(self, keep: f64) -> Self {
        let scale = |c: u8| {
            // In 0..=255 by construction.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let v = (f64::from(c) * keep).round() as u8;
            v
        };
        Self(scale(self.0), scale(self.1), scale(self.2))
    }
}

/// The WCAG contrast ratio of two colours, 1 to 21.
pub fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (a.luminance(), b.luminance());
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// The colours the pages use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// Button fill: `UI_ACCENT` as given.
    pub accent: Rgb,
    /// Text on the accent: black or white, whichever contrasts more.
    pub on_accent: Rgb,
    /// Links and the focus ring on the white page: the accent, darkened
    /// until it reaches 4.5:1 against white.
    pub link: Rgb,
}

impl Theme {
    /// The theme for `accent`.
    pub fn new(accent: Rgb) -> Self {
        let on_accent = if contrast(accent, BLACK) >= contrast(accent, WHITE) { BLACK } else { WHITE };
        let mut link = accent;
        let mut keep: f64 = 1.0;
        while contrast(link, WHITE) < TEXT_CONTRAST && keep > 0.0 {
            keep -= 0.05;
            link = accent.darkened(keep.max(0.0));
        }
        Self { accent, on_accent, link }
    }
}

impl Default for Theme {
    fn default() -> Self {
        Self::new(DEFAULT_ACCENT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hex_colours_parse_in_both_lengths_and_nothing_else_does() {
        assert_eq!(Rgb::parse("#2563eb"), Ok(Rgb(0x25, 0x63, 0xeb)));
        assert_eq!(Rgb::parse("#2563EB"), Ok(Rgb(0x25, 0x63, 0xeb)));
        assert_eq!(Rgb::parse("#fa0"), Ok(Rgb(0xff, 0xaa, 0x00)));
        for bad in ["2563eb", "#2563e", "#2563ebff", "#ggg", "red", "#", "", "#12 345", "#+12345"] {
            assert!(Rgb::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Rgb(0x0a, 0xb0, 0xff).hex(), "#0ab0ff");
    }

    #[test]
    fn contrast_matches_the_wcag_reference_values() {
        assert!((contrast(BLACK, WHITE) - 21.0).abs() < 1e-9);
        assert!((contrast(WHITE, WHITE) - 1.0).abs() < 1e-9);
        // #767676 on white is the classic just-passing grey (4.54:1).
        let grey = contrast(Rgb(0x76, 0x76, 0x76), WHITE);
        assert!(grey > 4.5 && grey < 4.6, "{grey}");
    }

    #[test]
    fn light_accents_get_black_text_and_dark_links() {
        let yellow = Theme::new(Rgb::parse("#ffdd00").unwrap());
        assert_eq!(yellow.on_accent, BLACK);
        assert!(contrast(yellow.link, WHITE) >= TEXT_CONTRAST);
        assert_ne!(yellow.link, yellow.accent, "darkened for the white page");
        let navy = Theme::new(Rgb::parse("#1e3a8a").unwrap());
        assert_eq!((navy.on_accent, navy.link), (WHITE, navy.accent), "dark enough as it is");
    }

    proptest! {
        #[test]
        fn every_accent_gives_readable_buttons_and_links(r: u8, g: u8, b: u8) {
            let t = Theme::new(Rgb(r, g, b));
            prop_assert!(contrast(t.accent, t.on_accent) >= TEXT_CONTRAST, "{:?}", t);
            prop_assert!(contrast(t.link, WHITE) >= TEXT_CONTRAST, "{:?}", t);
        }
    }
}

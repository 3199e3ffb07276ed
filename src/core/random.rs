//! Randomness as a port: the one trait every draw goes through (the edge
//! backs it with `crypto.getRandomValues`; tests with a seeded source).

/// A source of cryptographically secure random bytes. The edge backs it with
/// `crypto.getRandomValues`; tests may use a seeded one.
pub trait Random {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]);

    /// `N` random bytes.
    fn bytes<const N: usize>(&mut self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }
}

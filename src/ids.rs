//! Typed indices: a `BufId` is a logical buffer of the graph, a `Pos` a position in the
//! schedule. Nothing here has meaning beyond "an index".

macro_rules! typed_index {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        pub struct $name(pub u32);

        impl $name {
            /// The index as a `usize`.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }

            /// Wraps a `usize`.
            ///
            /// # Panics
            /// If `i` does not fit in 32 bits (a programmer error: graphs are far smaller).
            #[inline]
            pub fn new(i: usize) -> Self {
                Self(u32::try_from(i).expect("index fits in u32"))
            }
        }
    };
}

typed_index!(
    /// A logical buffer of the graph (its place in the arena is an offset, chosen by the plan).
    BufId
);
typed_index!(
    /// A position in the schedule of one window.
    Pos
);

//! Queue routing (SPEC 4): owned by the data-plane work.

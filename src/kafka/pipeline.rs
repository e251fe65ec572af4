//! The consume → score → produce loop (being written).

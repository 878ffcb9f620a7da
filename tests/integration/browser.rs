//! Browser end-to-end test (being written).

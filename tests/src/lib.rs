//! End-to-end test crate; the scenarios live in tests/tests/.

//! The consistency auditor: does every participant, and every outside system, agree with the
//! sagas? [`rules`] says what agreement means, over records read through each participant's own
//! read API (never its tables) and the outside systems' listings.

pub mod rules;

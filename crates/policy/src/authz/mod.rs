//! AuthorizationPolicy compiled for evaluation, with validation done in the same pass so every
//! problem is found once and reported with its field path.
//!
//! Semantics ("Authorization Policy" reference, section "Rule"): within a rule `from`, `to`
//! and `when` are ANDed; entries of `from`/`to` are ORed; fields inside a Source/Operation are
//! ANDed; values of one field are ORed; a `not*` field matches when no value matches. An absent
//! request attribute never matches a positive field and always satisfies a negative one.
//!
//! [`model`] is the compiled form, [`compile`] builds it from the CRD (validating as it goes,
//! each rule's clauses in [`clauses`], principals expanded over trust domains in [`principals`]),
//! [`eval`] matches requests against it and explains the result.

mod clauses;
mod compile;
mod eval;
mod model;
mod principals;

pub use compile::compile;
pub(crate) use eval::key_values;
pub use eval::Attrs;
pub use model::{
    CCondition, COperation, CSource, CompiledPolicy, CompiledRule, CondKey, CondValues, IpField,
    StrField, SUPPORTED_KEYS,
};
pub use principals::expand_principal;

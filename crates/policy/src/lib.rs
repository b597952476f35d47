//! The IAM policy language: parse, compile once, evaluate many times, and say why.
//!
//! Pure and synchronous: no I/O, no clock (time-based keys such as `aws:CurrentTime` arrive in the
//! request [`Context`]), no async runtime.
//!
//! ```
//! use podiam_policy::{Context, EvalDecision, Policy, PolicyKind, PolicySet, Request, evaluate};
//!
//! let policy = Policy::parse(
//!     r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:Get*",
//!         "Resource":"arn:aws:s3:::bucket/${aws:PrincipalTag/kubernetes-namespace}/*"}}"#,
//!     PolicyKind::Identity,
//! )?;
//! let mut context = Context::new();
//! context.insert("aws:PrincipalTag/kubernetes-namespace", "payments");
//! let identity = [&policy];
//! let set = PolicySet { identity: &identity, ..PolicySet::default() };
//! let request = Request {
//!     principal: None,
//!     action: "s3:GetObject",
//!     resource: "arn:aws:s3:::bucket/payments/report.csv",
//!     context: &context,
//! };
//! assert_eq!(evaluate(&request, &set).decision, EvalDecision::Allow);
//! # Ok::<(), podiam_policy::ParseError>(())
//! ```

pub mod arn;
pub mod condition;
pub mod context;
pub mod date;
pub mod eval;
pub mod json;
pub mod limits;
pub mod pattern;
pub mod policy;
pub mod validate;

pub use condition::{ConditionTrace, Operator, OperatorSpec, SetQualifier};
pub use context::{Context, ContextEntry, ContextKeyType, ContextValue, Values};
pub use eval::{
    Decision, EvalDecision, PolicySet, PolicyType, PrincipalKind, Reason, Record, Request,
    RequestPrincipal, StatementOutcome, StatementRef, StatementTrace, Trace, evaluate,
    evaluate_recorded, evaluate_trust, evaluate_with_trace, trust_set,
};
pub use limits::{Limits, SizeError};
pub use policy::{Effect, ParseError, Policy, PolicyKind, Statement, Version};

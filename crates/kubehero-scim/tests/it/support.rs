//! An S-expression view of the AST, so expected shapes read as one line each.

use kubehero_scim::Filter;

pub fn sexpr(filter: &Filter) -> String {
    match filter {
        Filter::Compare { path, op, value } => format!("({op} {path} {value})"),
        Filter::Present(path) => format!("(pr {path})"),
        Filter::Not(inner) => format!("(not {})", sexpr(inner)),
        Filter::And(l, r) => format!("(and {} {})", sexpr(l), sexpr(r)),
        Filter::Or(l, r) => format!("(or {} {})", sexpr(l), sexpr(r)),
        Filter::ValuePath { path, filter } => format!("(vp {path} {})", sexpr(filter)),
    }
}

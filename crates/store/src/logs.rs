//! Filters of the login and operation logs, as SQL.

use sqlx::any::AnyArguments;
use sqlx::query::{Query, QueryAs};
use sqlx::Any;

use crate::like_pattern;

/// What a log listing is narrowed to; every part is optional.
#[derive(Debug, Clone, Default)]
pub struct LogFilter<'a> {
    /// Free text (username/actor, IP, reason/action/target), case-insensitive.
    pub search: Option<&'a str>,
    /// Login log: the username; operation log: who acted. Exact, any case.
    pub user: Option<&'a str>,
    /// Login log only.
    pub success: Option<bool>,
    /// Login log only: `web`, `rest`, `basic`.
    pub method: Option<&'a str>,
    /// Operation log only: an action, or a prefix when it ends with `.`.
    pub action: Option<&'a str>,
    /// From this instant (ms), included.
    pub from_ms: Option<i64>,
    /// Before this instant (ms), excluded.
    pub until_ms: Option<i64>,
}

/// A bound value of a log query.
pub(crate) enum LogBind {
    Text(String),
    Int(i64),
}

impl LogBind {
    pub(crate) fn bind<'q>(&'q self, q: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        match self {
            LogBind::Text(s) => q.bind(s.as_str()),
            LogBind::Int(n) => q.bind(*n),
        }
    }

    pub(crate) fn bind_as<'q, T>(&'q self, q: QueryAs<'q, Any, T, AnyArguments<'q>>) -> QueryAs<'q, Any, T, AnyArguments<'q>> {
        match self {
            LogBind::Text(s) => q.bind(s.as_str()),
            LogBind::Int(n) => q.bind(*n),
        }
    }
}

struct Clauses {
    parts: Vec<String>,
    binds: Vec<LogBind>,
}

impl Clauses {
    fn new() -> Clauses {
        Clauses { parts: vec![], binds: vec![] }
    }

    /// Add a condition; `$` in it stands for the next parameter.
    fn push(&mut self, sql: &str, value: LogBind) {
        self.binds.push(value);
        self.parts.push(sql.replace('$', &format!("${}", self.binds.len())));
    }

    fn finish(self) -> (String, Vec<LogBind>) {
        let where_ = if self.parts.is_empty() { String::new() } else { format!(" WHERE {}", self.parts.join(" AND ")) };
        (where_, self.binds)
    }
}

impl LogFilter<'_> {
    fn common(&self, c: &mut Clauses, user_column: &str) {
        if let Some(u) = self.user {
            c.push(&format!("lower({user_column}) = $"), LogBind::Text(u.to_lowercase()));
        }
        if let Some(t) = self.from_ms {
            c.push("at >= $", LogBind::Int(t));
        }
        if let Some(t) = self.until_ms {
            c.push("at < $", LogBind::Int(t));
        }
    }

    pub(crate) fn login_clause(&self) -> (String, Vec<LogBind>) {
        let mut c = Clauses::new();
        self.common(&mut c, "username");
        if let Some(ok) = self.success {
            c.push("success = $", LogBind::Int(i64::from(ok)));
        }
        if let Some(m) = self.method {
            c.push("method = $", LogBind::Text(m.to_string()));
        }
        if let Some(s) = self.search {
            // One parameter used three times.
            c.push(
                "(lower(username) LIKE $ ESCAPE '\\' OR ip LIKE $ ESCAPE '\\' OR lower(reason) LIKE $ ESCAPE '\\')",
                LogBind::Text(like_pattern(s)),
            );
        }
        c.finish()
    }

    pub(crate) fn operation_clause(&self) -> (String, Vec<LogBind>) {
        let mut c = Clauses::new();
        self.common(&mut c, "actor");
        if let Some(a) = self.action {
            if a.ends_with('.') {
                c.push("action LIKE $ ESCAPE '\\'", LogBind::Text(format!("{}%", escape_like(a))));
            } else {
                c.push("action = $", LogBind::Text(a.to_string()));
            }
        }
        if let Some(s) = self.search {
            c.push(
                "(lower(actor) LIKE $ ESCAPE '\\' OR lower(action) LIKE $ ESCAPE '\\' OR lower(target) LIKE $ ESCAPE '\\')",
                LogBind::Text(like_pattern(s)),
            );
        }
        c.finish()
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_number_their_parameters_in_order() {
        let f = LogFilter { user: Some("Ann"), success: Some(false), search: Some("x"), from_ms: Some(5), ..Default::default() };
        let (sql, binds) = f.login_clause();
        assert_eq!(
            sql,
            " WHERE lower(username) = $1 AND at >= $2 AND success = $3 AND \
             (lower(username) LIKE $4 ESCAPE '\\' OR ip LIKE $4 ESCAPE '\\' OR lower(reason) LIKE $4 ESCAPE '\\')"
        );
        assert_eq!(binds.len(), 4);
        let (sql, _) = LogFilter { action: Some("user."), ..Default::default() }.operation_clause();
        assert_eq!(sql, " WHERE action LIKE $1 ESCAPE '\\'");
        assert_eq!(LogFilter::default().operation_clause().0, "");
    }
}

//! HTML from templates, the one way windsock's pages (the web UI, the dashboard) are made:
//! minijinja with every value escaped (the `.html` template names turn escaping on), and a
//! missing value written as nothing rather than `none`.

use minijinja::{Environment, Output, State, Value};

/// An environment holding `templates` (name, source); a template that does not compile is
/// logged and left out, so a page that uses it says so instead of the process failing.
pub(crate) fn environment(templates: &[(&'static str, &'static str)]) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_formatter(|out: &mut Output, state: &mut State, value: &Value| {
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        minijinja::escape_formatter(out, state, value)
    });
    for (name, source) in templates {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!("the page template {name} does not compile: {e}");
        }
    }
    env
}

/// Renders `name` with `ctx` (any serializable value).
pub(crate) fn render(
    env: &Environment<'_>,
    name: &str,
    ctx: &impl serde::Serialize,
) -> Result<String, minijinja::Error> {
    env.get_template(name)?
        .render(Value::from(minijinja::value::Serde(ctx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_none_is_empty() {
        let env = environment(&[("t.html", "<p title=\"{{ a }}\">{{ a }}|{{ b }}|{{ c }}</p>")]);
        let out = render(
            &env,
            "t.html",
            &serde_json::json!({ "a": "<script>\"x\"", "b": null, "c": 3 }),
        )
        .unwrap();
        assert_eq!(
            out,
            "<p title=\"&lt;script&gt;&quot;x&quot;\">&lt;script&gt;&quot;x&quot;||3</p>"
        );
    }
}

//! Content negotiation for the status document: JSON or HTML.
//!
//! sequins returns JSON only when an `Accept` header is exactly
//! `application/json`; a client sending `application/json, text/plain` or
//! `application/json;q=0.9` gets HTML. We read the header as RFC 9110 says:
//! a list of media ranges with optional `q` weights, where the most specific
//! range matching a type gives its weight. JSON is chosen when it weighs
//! more than HTML, or the same but was named more specifically (so
//! `application/json, */*` is JSON while a browser's `text/html, ...,
//! */*;q=0.8` and curl's `*/*` stay HTML, sequins' default).

use hyper::HeaderMap;
use hyper::header::ACCEPT;

/// How well one media range matched a type: specificity, then weight.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Match {
    /// 2 for `type/subtype`, 1 for `type/*`, 0 for `*/*`.
    specificity: u8,
    q: f32,
}

/// Whether the client prefers `application/json` to `text/html`.
pub fn prefers_json(headers: &HeaderMap) -> bool {
    let mut json: Option<Match> = None;
    let mut html: Option<Match> = None;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let Some((media, q)) = parse_range(range) else {
                continue;
            };
            consider(&mut json, matches(&media, "application", "json"), q);
            consider(&mut html, matches(&media, "text", "html"), q);
        }
    }
    match (json, html) {
        (Some(j), _) if j.q <= 0.0 => false,
        (Some(_), None) => true,
        (Some(j), Some(h)) => j.q > h.q || (j.q == h.q && j.specificity > h.specificity),
        (None, _) => false,
    }
}

/// Keeps the most specific matching range (the first one, among equals).
fn consider(best: &mut Option<Match>, specificity: Option<u8>, q: f32) {
    if let Some(specificity) = specificity
        && best.is_none_or(|b| specificity > b.specificity)
    {
        *best = Some(Match { specificity, q });
    }
}

fn matches(media: &str, kind: &str, subtype: &str) -> Option<u8> {
    let (t, s) = media.split_once('/')?;
    match (t.trim(), s.trim()) {
        ("*", "*") => Some(0),
        (t, "*") if t.eq_ignore_ascii_case(kind) => Some(1),
        (t, s) if t.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype) => Some(2),
        _ => None,
    }
}

/// `media/type;param=x;q=0.5` -> (`media/type`, 0.5). A missing or
/// unparsable `q` counts as 1, clamped to 0..=1.
fn parse_range(range: &str) -> Option<(String, f32)> {
    let mut parts = range.split(';');
    let media = parts.next()?.trim().to_ascii_lowercase();
    if media.is_empty() {
        return None;
    }
    let mut q = 1.0f32;
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = value.trim().parse::<f32>().unwrap_or(1.0).clamp(0.0, 1.0);
        }
    }
    Some((media, q))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn json(accepts: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        for a in accepts {
            headers.append(ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        prefers_json(&headers)
    }

    #[test]
    fn exact_json_as_in_sequins() {
        assert!(json(&["application/json"]));
        assert!(!json(&[]));
        assert!(!json(&["text/html"]));
    }

    #[test]
    fn lists_and_q_values_that_sequins_gets_wrong() {
        assert!(json(&["application/json, text/plain"]));
        assert!(json(&["text/plain", "application/json"]));
        assert!(json(&["application/json;q=0.9, text/html;q=0.5"]));
        assert!(json(&["Application/JSON; charset=utf-8"]));
        assert!(json(&["application/*"]));
        assert!(json(&["application/json, */*"]));
        assert!(!json(&["text/html, application/json;q=0.9"]));
        assert!(!json(&["application/json;q=0"]));
        assert!(!json(&["*/*"]));
        assert!(!json(&[
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ]));
    }
}

//! `kind: prometheus` metric provider: one instant query over the HTTP API
//! (`GET {url}/api/v1/query?query=...&time=...`) per evaluation.
//!
//! The query must yield one number: a scalar, or a vector (or matrix) with
//! exactly one series. An empty result and `NaN` (e.g. `0/0` when there was
//! no traffic) are "no data"; several series are an error that names them,
//! since a gate silently reading one of them at random would be worse.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value as Json;

use super::{BoxFuture, MetricSource};

/// Per-request timeout when the provider sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many series an error about several series lists.
const SHOWN_SERIES: usize = 5;

pub struct Prometheus {
    client: reqwest::Client,
    endpoint: String,
    timeout: Duration,
}

impl Prometheus {
    /// `url` is the server's base URL (a path prefix is kept); `headers` are
    /// sent with every request (already rendered: they may hold secrets, so
    /// no error here ever quotes a header value).
    pub fn new(
        url: &str,
        headers: &[(String, String)],
        timeout: Option<Duration>,
    ) -> Result<Prometheus, String> {
        let parsed = reqwest::Url::parse(url.trim())
            .map_err(|e| format!("invalid prometheus url `{url}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "invalid prometheus url `{url}`: the scheme must be http or https"
            ));
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let header = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| format!("invalid header name `{name}`"))?;
            let mut v = HeaderValue::from_str(value.trim())
                .map_err(|_| format!("the value of header `{name}` is not a valid header value"))?;
            v.set_sensitive(true);
            map.insert(header, v);
        }
        let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT);
        let client = reqwest::Client::builder()
            .default_headers(map)
            .timeout(timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {}", chain(&e)))?;
        Ok(Prometheus {
            client,
            endpoint: format!("{}/api/v1/query", url.trim().trim_end_matches('/')),
            timeout,
        })
    }

    async fn get(&self, query: &str, at: Option<SystemTime>) -> Result<Option<f64>, String> {
        let mut params = vec![("query", query.to_string())];
        if let Some(at) = at {
            params.push(("time", format_time(at)?));
        }
        let response = self
            .client
            .get(&self.endpoint)
            .query(&params)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| self.request_error(e))?;
        parse_response(status, &body)
    }

    fn request_error(&self, e: reqwest::Error) -> String {
        if e.is_timeout() {
            format!(
                "prometheus query to {} timed out after {}",
                self.endpoint,
                crate::duration::format(self.timeout)
            )
        } else {
            format!(
                "prometheus query to {} failed: {}",
                self.endpoint,
                chain(&e.without_url())
            )
        }
    }
}

impl MetricSource for Prometheus {
    fn query<'a>(
        &'a self,
        query: &'a str,
        at: Option<SystemTime>,
    ) -> BoxFuture<'a, Result<Option<f64>, String>> {
        Box::pin(self.get(query, at))
    }
}

/// reqwest's own message is terse ("error sending request"): add the causes
/// ("Connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg = format!("{msg}: {text}");
        }
        source = s.source();
    }
    msg
}

/// Unix seconds with millisecond precision, as the API's `time` expects.
pub fn format_time(t: SystemTime) -> Result<String, String> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the evaluation time is before 1970".to_string())?;
    Ok(format!("{}.{:03}", d.as_secs(), d.subsec_millis()))
}

/// Turns an API response into the gate's number.
pub fn parse_response(status: u16, body: &str) -> Result<Option<f64>, String> {
    let ok = (200..300).contains(&status);
    let json: Json = match serde_json::from_str(body) {
        Ok(j) => j,
        Err(_) if !ok => {
            return Err(format!(
                "prometheus answered HTTP {status}: {}",
                snippet(body)
            ))
        }
        Err(e) => {
            return Err(format!(
                "prometheus answered something that is not JSON ({e}): {}",
                snippet(body)
            ))
        }
    };
    if json.get("status").and_then(Json::as_str) != Some("success") || !ok {
        let error = json.get("error").and_then(Json::as_str);
        let kind = json.get("errorType").and_then(Json::as_str);
        return Err(match (kind, error) {
            (Some(k), Some(e)) => format!("prometheus answered HTTP {status}: {k}: {e}"),
            (None, Some(e)) => format!("prometheus answered HTTP {status}: {e}"),
            _ => format!("prometheus answered HTTP {status}: {}", snippet(body)),
        });
    }
    let data = json
        .get("data")
        .ok_or_else(|| "prometheus answered without `data`".to_string())?;
    let kind = data
        .get("resultType")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let result = data.get("result").unwrap_or(&Json::Null);
    match kind {
        "scalar" | "string" => sample_value(result),
        "vector" | "matrix" => {
            let series = result.as_array().map(Vec::as_slice).unwrap_or_default();
            match series {
                [] => Ok(None),
                [one] if kind == "vector" => match one.get("value") {
                    Some(v) => sample_value(v),
                    None if one.get("histogram").is_some() => Err(
                        "the query returned a native histogram, not a number (use histogram_quantile or histogram_count)".into(),
                    ),
                    None => Err(format!("a vector sample without a value: {one}")),
                },
                [one] => match one
                    .get("values")
                    .and_then(Json::as_array)
                    .and_then(|v| v.last())
                {
                    Some(v) => sample_value(v),
                    None if one.get("histograms").is_some() => Err(
                        "the query returned native histograms, not numbers".into(),
                    ),
                    None => Ok(None),
                },
                many => Err(several_series(many)),
            }
        }
        other => Err(format!(
            "prometheus answered an unknown result type `{other}`"
        )),
    }
}

/// `[ <unix time>, "<value>" ]` -> the value; NaN is no data.
fn sample_value(pair: &Json) -> Result<Option<f64>, String> {
    let text = pair
        .get(1)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("a sample that is not [time, \"value\"]: {pair}"))?;
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("the query returned `{text}`, not a number"))?;
    Ok(if v.is_nan() { None } else { Some(v) })
}

fn several_series(series: &[Json]) -> String {
    let shown: Vec<String> = series
        .iter()
        .take(SHOWN_SERIES)
        .map(|s| labels(s.get("metric")))
        .collect();
    let more = match series.len().saturating_sub(SHOWN_SERIES) {
        0 => String::new(),
        n => format!(" and {n} more"),
    };
    format!(
        "the query returned {} series but a gate needs exactly one number (aggregate it, e.g. with sum(), or filter by label): {}{more}",
        series.len(),
        shown.join(", ")
    )
}

/// `name{a="1", b="2"}`, as Prometheus prints a series.
fn labels(metric: Option<&Json>) -> String {
    let Some(map) = metric.and_then(Json::as_object) else {
        return "{}".into();
    };
    let name = map
        .get("__name__")
        .and_then(Json::as_str)
        .unwrap_or_default();
    let mut pairs: Vec<(&String, &Json)> = map.iter().filter(|(k, _)| *k != "__name__").collect();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                Json::String(v.as_str().unwrap_or_default().to_string())
            )
        })
        .collect();
    format!("{name}{{{}}}", inner.join(", "))
}

fn snippet(body: &str) -> String {
    let t = body.trim();
    let mut s: String = t.chars().take(300).collect();
    if s.len() < t.len() {
        s.push('…');
    }
    if s.is_empty() {
        s = "(empty body)".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(data: &str) -> String {
        format!(r#"{{"status":"success","data":{data}}}"#)
    }

    #[test]
    fn scalar_is_its_value() {
        let body = ok(r#"{"resultType":"scalar","result":[1700000000.5,"0.25"]}"#);
        assert_eq!(parse_response(200, &body), Ok(Some(0.25)));
    }

    #[test]
    fn one_series_vector_is_its_value() {
        let body = ok(
            r#"{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[1700000000,"0.002"]}]}"#,
        );
        assert_eq!(parse_response(200, &body), Ok(Some(0.002)));
    }

    #[test]
    fn one_series_matrix_is_its_last_value() {
        let body =
            ok(r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"3"]]}]}"#);
        assert_eq!(parse_response(200, &body), Ok(Some(3.0)));
    }

    #[test]
    fn empty_and_nan_are_no_data() {
        assert_eq!(
            parse_response(200, &ok(r#"{"resultType":"vector","result":[]}"#)),
            Ok(None)
        );
        assert_eq!(
            parse_response(200, &ok(r#"{"resultType":"scalar","result":[1,"NaN"]}"#)),
            Ok(None)
        );
    }

    #[test]
    fn infinity_is_a_value() {
        let body = ok(r#"{"resultType":"scalar","result":[1,"+Inf"]}"#);
        assert_eq!(parse_response(200, &body), Ok(Some(f64::INFINITY)));
    }

    #[test]
    fn several_series_are_named() {
        let body = ok(r#"{"resultType":"vector","result":[
                {"metric":{"__name__":"up","job":"a"},"value":[1,"1"]},
                {"metric":{"job":"b","code":"500"},"value":[1,"0"]}]}"#);
        let e = parse_response(200, &body).unwrap_err();
        assert!(e.contains("returned 2 series"), "{e}");
        assert!(e.contains(r#"up{job="a"}"#), "{e}");
        assert!(e.contains(r#"{code="500", job="b"}"#), "{e}");
    }

    #[test]
    fn api_errors_carry_the_message() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error: unexpected end of input"}"#;
        let e = parse_response(400, body).unwrap_err();
        assert_eq!(
            e,
            "prometheus answered HTTP 400: bad_data: parse error: unexpected end of input"
        );
        let e = parse_response(401, "Unauthorized\n").unwrap_err();
        assert_eq!(e, "prometheus answered HTTP 401: Unauthorized");
    }

    #[test]
    fn time_has_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(format_time(t).unwrap(), "1700000000.250");
    }
}

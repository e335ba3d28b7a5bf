//! `kind: prometheus` metric provider: one instant query over the HTTP API
//! (`GET {url}/api/v1/query?query=...&time=...`) per evaluation, and range
//! queries (`GET {url}/api/v1/query_range?...`) for the points a baseline
//! vs canary comparison ([`crate::analysis::compare`]) needs.
//!
//! The query must yield one number: a scalar, or a vector (or matrix) with
//! exactly one series. An empty result and `NaN` (e.g. `0/0` when there was
//! no traffic) are "no data"; several series are an error that names them,
//! since a gate silently reading one of them at random would be worse.
//!
//! A range query must yield a matrix of at most one series (several are the
//! same error); its points come back in time order with NaN kept as NaN, so
//! the comparison's NaN strategy decides what they mean.

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
    /// The server's base URL without a trailing `/`; endpoints hang off it.
    base: String,
    /// The instant-query endpoint, `{base}/api/v1/query`.
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
        let base = url.trim().trim_end_matches('/').to_string();
        Ok(Prometheus {
            client,
            endpoint: format!("{base}/api/v1/query"),
            base,
            timeout,
        })
    }

    /// The points of the one series `query` yields from `start` to `end`,
    /// every `step`, in time order (`query_range`). NaN points are kept, for
    /// the caller's NaN strategy; no series is an empty list.
    pub async fn range(
        &self,
        query: &str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> Result<Vec<f64>, String> {
        let endpoint = format!("{}/api/v1/query_range", self.base);
        let params = [
            ("query", query.to_string()),
            ("start", format_time(start)?),
            ("end", format_time(end)?),
            ("step", format_step(step)?),
        ];
        let response = self
            .client
            .get(&endpoint)
            .query(&params)
            .send()
            .await
            .map_err(|e| self.error_at(&endpoint, e))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| self.error_at(&endpoint, e))?;
        parse_range_response(status, &body)
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
        self.error_at(&self.endpoint, e)
    }

    fn error_at(&self, endpoint: &str, e: reqwest::Error) -> String {
        if e.is_timeout() {
            format!(
                "prometheus query to {endpoint} timed out after {}",
                crate::duration::format(self.timeout)
            )
        } else {
            format!(
                "prometheus query to {endpoint} failed: {}",
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

    fn query_range<'a>(
        &'a self,
        query: &'a str,
        start: SystemTime,
        end: SystemTime,
        step: Duration,
    ) -> BoxFuture<'a, Result<Vec<f64>, String>> {
        Box::pin(self.range(query, start, end, step))
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

/// A range query's `step` in seconds: `60`, `0.5`, `1.25` (at most
/// millisecond precision, like [`format_time`]).
fn format_step(step: Duration) -> Result<String, String> {
    if step.as_millis() == 0 {
        return Err("the step of a range query must be at least 1ms".to_string());
    }
    let text = format!("{}.{:03}", step.as_secs(), step.subsec_millis());
    Ok(text.trim_end_matches('0').trim_end_matches('.').to_string())
}

/// Turns an API response into the gate's number.
pub fn parse_response(status: u16, body: &str) -> Result<Option<f64>, String> {
    let data = success_data(status, body)?;
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

/// Turns a range query's response into the series' points, in time order:
/// the result must be a matrix of at most one series (none: no points).
/// NaN points are kept as NaN, for the caller's NaN strategy; `+Inf` and
/// `-Inf` are infinities.
pub fn parse_range_response(status: u16, body: &str) -> Result<Vec<f64>, String> {
    let data = success_data(status, body)?;
    let kind = data
        .get("resultType")
        .and_then(Json::as_str)
        .unwrap_or_default();
    if kind != "matrix" {
        return Err(format!(
            "prometheus answered a range query with result type `{kind}`, not `matrix`"
        ));
    }
    let series = data
        .get("result")
        .and_then(Json::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let one = match series {
        [] => return Ok(Vec::new()),
        [one] => one,
        many => return Err(several_series(many)),
    };
    let Some(values) = one.get("values").and_then(Json::as_array) else {
        return if one.get("histograms").is_some() {
            Err("the query returned native histograms, not numbers".into())
        } else {
            Ok(Vec::new())
        };
    };
    let mut points: Vec<(f64, f64)> = values
        .iter()
        .map(|pair| {
            let time = pair
                .get(0)
                .and_then(Json::as_f64)
                .ok_or_else(|| format!("a sample that is not [time, \"value\"]: {pair}"))?;
            Ok((time, sample_number(pair)?))
        })
        .collect::<Result<_, String>>()?;
    // Prometheus sends them in time order; a stable sort makes it a promise.
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(points.into_iter().map(|(_, v)| v).collect())
}

/// The `data` of a successful API response, or the error the response
/// carries.
fn success_data(status: u16, body: &str) -> Result<Json, String> {
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
    match json {
        Json::Object(mut map) => map
            .remove("data")
            .ok_or_else(|| "prometheus answered without `data`".to_string()),
        _ => Err("prometheus answered without `data`".to_string()),
    }
}

/// `[ <unix time>, "<value>" ]` -> the value; NaN is no data.
fn sample_value(pair: &Json) -> Result<Option<f64>, String> {
    let v = sample_number(pair)?;
    Ok(if v.is_nan() { None } else { Some(v) })
}

/// `[ <unix time>, "<value>" ]` -> the value, NaN included.
fn sample_number(pair: &Json) -> Result<f64, String> {
    let text = pair
        .get(1)
        .and_then(Json::as_str)
        .ok_or_else(|| format!("a sample that is not [time, \"value\"]: {pair}"))?;
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("the query returned `{text}`, not a number"))?;
    Ok(v)
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
    fn a_range_is_its_points_in_time_order() {
        let body = ok(r#"{"resultType":"matrix","result":[{"metric":{"job":"api"},
                "values":[[1700000060,"0.5"],[1700000000,"1"],[1700000120,"2e-3"]]}]}"#);
        assert_eq!(parse_range_response(200, &body), Ok(vec![1.0, 0.5, 0.002]));
    }

    #[test]
    fn a_range_keeps_nan_and_infinities() {
        let body = ok(r#"{"resultType":"matrix","result":[{"metric":{},
                "values":[[1,"NaN"],[2,"+Inf"],[3,"-Inf"],[4,"7"]]}]}"#);
        let points = parse_range_response(200, &body).unwrap();
        assert_eq!(points.len(), 4);
        assert!(points[0].is_nan());
        assert_eq!(points[1..], [f64::INFINITY, f64::NEG_INFINITY, 7.0]);
    }

    #[test]
    fn an_empty_range_has_no_points() {
        let body = ok(r#"{"resultType":"matrix","result":[]}"#);
        assert_eq!(parse_range_response(200, &body), Ok(vec![]));
    }

    #[test]
    fn a_range_of_several_series_is_an_error() {
        let body = ok(r#"{"resultType":"matrix","result":[
                {"metric":{"__name__":"up","job":"a"},"values":[[1,"1"]]},
                {"metric":{"job":"b","code":"500"},"values":[[1,"0"]]}]}"#);
        let e = parse_range_response(200, &body).unwrap_err();
        let instant = parse_response(200, &body).unwrap_err();
        assert_eq!(e, instant);
        assert!(e.contains("returned 2 series"), "{e}");
        assert!(e.contains(r#"up{job="a"}, {code="500", job="b"}"#), "{e}");
    }

    #[test]
    fn a_range_value_must_be_a_number() {
        let body =
            ok(r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"1"],[2,"high"]]}]}"#);
        assert_eq!(
            parse_range_response(200, &body),
            Err("the query returned `high`, not a number".to_string())
        );
        let body = ok(r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,2]]}]}"#);
        let e = parse_range_response(200, &body).unwrap_err();
        assert!(
            e.starts_with("a sample that is not [time, \"value\"]"),
            "{e}"
        );
    }

    #[test]
    fn a_range_must_be_a_matrix() {
        let body = ok(r#"{"resultType":"vector","result":[]}"#);
        assert_eq!(
            parse_range_response(200, &body),
            Err("prometheus answered a range query with result type `vector`, not `matrix`".into())
        );
    }

    #[test]
    fn range_api_errors_carry_the_message() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"end timestamp must not be before start time"}"#;
        assert_eq!(
            parse_range_response(400, body),
            Err(
                "prometheus answered HTTP 400: bad_data: end timestamp must not be before start time"
                    .into()
            )
        );
        assert_eq!(
            parse_range_response(503, "Service Unavailable"),
            Err("prometheus answered HTTP 503: Service Unavailable".into())
        );
        let e = parse_range_response(200, "<html>").unwrap_err();
        assert!(
            e.starts_with("prometheus answered something that is not JSON"),
            "{e}"
        );
    }

    #[test]
    fn steps_are_seconds() {
        assert_eq!(format_step(Duration::from_secs(60)).unwrap(), "60");
        assert_eq!(format_step(Duration::from_millis(500)).unwrap(), "0.5");
        assert_eq!(format_step(Duration::from_millis(1250)).unwrap(), "1.25");
        assert_eq!(format_step(Duration::from_millis(10)).unwrap(), "0.01");
        assert!(format_step(Duration::from_micros(999)).is_err());
    }

    #[test]
    fn endpoints_share_the_base_url() {
        let p = Prometheus::new(" http://prom:9090/prefix/ ", &[], None).unwrap();
        assert_eq!(p.base, "http://prom:9090/prefix");
        assert_eq!(p.endpoint, "http://prom:9090/prefix/api/v1/query");
    }

    #[test]
    fn a_range_query_asks_query_range_and_reads_the_points() {
        // One request to a server on the loopback, answered on this thread.
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let answer = std::thread::spawn(move || {
            let request = server
                .recv_timeout(Duration::from_secs(20))
                .unwrap()
                .unwrap();
            let url = request.url().to_string();
            let body = ok(
                r#"{"resultType":"matrix","result":[{"metric":{},"values":[[1,"0.1"],[2,"NaN"]]}]}"#,
            );
            request
                .respond(tiny_http::Response::from_string(body))
                .unwrap();
            url
        });
        let p = Prometheus::new(&format!("http://127.0.0.1:{port}/prom/"), &[], None).unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let end = start + Duration::from_secs(600);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let points = runtime
            .block_on(p.query_range("rate(x[1m])", start, end, Duration::from_millis(500)))
            .unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0], 0.1);
        assert!(points[1].is_nan());
        assert_eq!(
            answer.join().unwrap(),
            "/prom/api/v1/query_range?query=rate%28x%5B1m%5D%29&start=1700000000.250&end=1700000600.250&step=0.5"
        );
    }

    #[test]
    fn time_has_millisecond_precision() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(format_time(t).unwrap(), "1700000000.250");
    }
}

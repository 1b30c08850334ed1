//! The Dashboard's charts, drawn as SVG in the page itself: no chart
//! library in the WASM, and they show without JavaScript.

use bindery_model::{ActivityBucket, RunState, SyncPoint};
use leptos::prelude::*;

const W: f64 = 720.0;
const H: f64 = 180.0;
/// Room for the axis labels.
const LEFT: f64 = 36.0;
const BOTTOM: f64 = 22.0;

/// A round upper bound for the value axis (1, 2, 5, 10, 20, 50, …).
fn nice_max(v: i64) -> i64 {
    let v = v.max(1);
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= v {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// Sign-ins per bucket: successes stacked by method (web, REST, HTTP Basic),
/// failures as a bar of their own beside them.
#[component]
pub fn ActivityChart(
    buckets: Vec<ActivityBucket>,
    title: &'static str,
    /// How a bucket's start is labelled (`10:00`, `11-23`).
    label: fn(&str) -> String,
    test_id: &'static str,
) -> impl IntoView {
    let max = nice_max(buckets.iter().map(|b| b.succeeded().max(b.failed)).max().unwrap_or(0));
    let n = buckets.len().max(1) as f64;
    let slot = (W - LEFT) / n;
    let bar = (slot * 0.38).max(1.0);
    let y = move |v: i64| (H - BOTTOM) * (1.0 - v as f64 / max as f64);
    let every = (buckets.len() / 8).max(1);
    let total: i64 = buckets.iter().map(|b| b.succeeded() + b.failed).sum();
    let desc = format!("{total} sign-ins in the period; the highest bar is at most {max}.");
    view! {
        <figure class="chart" data-testid=test_id>
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=title>
                <title>{title}</title>
                <desc>{desc}</desc>
                <line class="axis" x1=LEFT y1=H - BOTTOM x2=W y2=H - BOTTOM/>
                <text class="tick" x=LEFT - 4.0 y=10.0 text-anchor="end">{max.to_string()}</text>
                <text class="tick" x=LEFT - 4.0 y=H - BOTTOM text-anchor="end">"0"</text>
                {buckets.iter().enumerate().map(|(i, b)| {
                    let x = LEFT + i as f64 * slot + slot * 0.1;
                    let (web_top, rest_top, basic_top) = (y(b.web), y(b.web + b.rest), y(b.succeeded()));
                    let base = H - BOTTOM;
                    let tip = format!("{}: {} web, {} REST, {} Basic, {} failed", b.start, b.web, b.rest, b.basic, b.failed);
                    view! {
                        <g>
                            <title>{tip}</title>
                            <rect class="web" x=x y=web_top width=bar height=base - web_top/>
                            <rect class="rest" x=x y=rest_top width=bar height=web_top - rest_top/>
                            <rect class="basic" x=x y=basic_top width=bar height=rest_top - basic_top/>
                            <rect class="failed" x=x + bar y=y(b.failed) width=bar height=base - y(b.failed)/>
                            {(i % every == 0).then(|| view! {
                                <text class="tick" x=x + bar y=H - 6.0 text-anchor="middle">{label(&b.start)}</text>
                            })}
                        </g>
                    }
                }).collect_view()}
            </svg>
            <p class="legend">
                <span class="key web"></span>"Web " <span class="key rest"></span>"REST " <span class="key basic"></span>"HTTP Basic "
                <span class="key failed"></span>"Failed"
            </p>
        </figure>
    }
}

/// The latest sync runs: each run's duration as a bar, coloured by how it
/// ended (held and failed runs stand out), with its creates, updates and
/// disables in its tooltip and under the chart.
#[component]
pub fn SyncHistoryChart(runs: Vec<SyncPoint>) -> impl IntoView {
    if runs.is_empty() {
        return view! { <p class="muted" data-testid="sync-history">"No sync has run yet."</p> }.into_any();
    }
    let max_ms = runs.iter().map(|r| r.duration_ms).max().unwrap_or(1).max(1);
    let max_s = nice_max((max_ms + 999) / 1000);
    let n = runs.len().max(1) as f64;
    let slot = (W - LEFT) / n;
    let bar = (slot * 0.7).max(2.0);
    let y = move |ms: i64| (H - BOTTOM) * (1.0 - ms as f64 / (max_s * 1000) as f64);
    let title = "Sync runs: duration, and what each changed";
    view! {
        <figure class="chart" data-testid="sync-history">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=title>
                <title>{title}</title>
                <desc>{format!("{} runs; the longest took at most {max_s} s.", runs.len())}</desc>
                <line class="axis" x1=LEFT y1=H - BOTTOM x2=W y2=H - BOTTOM/>
                <text class="tick" x=LEFT - 4.0 y=10.0 text-anchor="end">{format!("{max_s}s")}</text>
                <text class="tick" x=LEFT - 4.0 y=H - BOTTOM text-anchor="end">"0"</text>
                {runs.iter().enumerate().map(|(i, r)| {
                    let x = LEFT + i as f64 * slot + slot * 0.15;
                    let top = y(r.duration_ms);
                    let class = match r.state {
                        RunState::Held => "held",
                        RunState::Failed | RunState::Interrupted | RunState::Rejected => "failed",
                        _ if r.dry_run => "dry",
                        _ => "done",
                    };
                    let tip = format!(
                        "#{} {} — {}{} in {:.1} s: {} created, {} updated, {} disabled",
                        r.id, r.started_at, r.state, if r.dry_run { " (dry run)" } else { "" },
                        r.duration_ms as f64 / 1000.0, r.created, r.updated, r.disabled
                    );
                    view! {
                        <a href=format!("/sync/runs/{}", r.id)>
                            <title>{tip}</title>
                            <rect class=format!("run {class}") x=x y=top width=bar height=(H - BOTTOM - top).max(1.0)/>
                            <text class="tick" x=x + bar / 2.0 y=H - 6.0 text-anchor="middle">{format!("#{}", r.id)}</text>
                        </a>
                    }
                }).collect_view()}
            </svg>
            <p class="legend">
                <span class="key done"></span>"Applied " <span class="key dry"></span>"Dry run "
                <span class="key held"></span>"Held for approval " <span class="key failed"></span>"Failed or rejected"
            </p>
        </figure>
    }
    .into_any()
}

/// `2026-11-23T10:00:00Z` → `10:00`.
pub fn hour_label(start: &str) -> String {
    start.get(11..16).unwrap_or(start).to_string()
}

/// `2026-11-23T00:00:00Z` → `11-23`.
pub fn day_label(start: &str) -> String {
    start.get(5..10).unwrap_or(start).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_bounds_are_round() {
        assert_eq!([0, 1, 3, 7, 11, 120, 4999].map(nice_max), [1, 1, 5, 10, 20, 200, 5000]);
        assert_eq!(hour_label("2026-11-23T10:00:00Z"), "10:00");
        assert_eq!(day_label("2026-11-23T00:00:00Z"), "11-23");
    }
}

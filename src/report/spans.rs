//! Time spent in each span of a run, by name: a tracing layer (`SpanTimes`) that
//! adds up how long each span was entered, so a report can split a step into
//! forward, recompute, head, backward and optimizer without a trace file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::span::{Attributes, Id};
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Seconds and entries of one span name.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct SpanTotal {
    /// Seconds spent inside spans of this name (nested spans of the same name counted
    /// once each).
    pub seconds: f64,
    /// Times a span of this name was entered.
    pub count: u64,
}

/// A tracing layer that totals the time spent in spans, by name. Clone it to read
/// the totals while (or after) it is installed.
#[derive(Clone, Debug, Default)]
pub struct SpanTimes {
    totals: Arc<Mutex<BTreeMap<&'static str, SpanTotal>>>,
}

/// When a span was entered (kept in the span's extensions).
struct Entered(Instant);

impl SpanTimes {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// The totals so far, by span name.
    pub fn totals(&self) -> BTreeMap<&'static str, SpanTotal> {
        self.totals.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Forgets the totals so far (after a warm-up, say).
    pub fn reset(&self) {
        if let Ok(mut t) = self.totals.lock() {
            t.clear();
        }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: Context<'_, S>) {}

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().replace(Entered(Instant::now()));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(Entered(at)) = span.extensions_mut().remove::<Entered>() else {
            return;
        };
        if let Ok(mut t) = self.totals.lock() {
            let e = t.entry(span.metadata().name()).or_default();
            e.seconds += at.elapsed().as_secs_f64();
            e.count += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    /// Spans are totalled by name: entries counted, time added, nesting kept apart.
    #[test]
    fn spans_are_totalled_by_name() {
        let times = SpanTimes::new();
        let subscriber = tracing_subscriber::registry().with(times.clone());
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..3 {
                let _outer = tracing::info_span!("outer").entered();
                let _inner = tracing::trace_span!("inner").entered();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let t = times.totals();
        assert_eq!(t["outer"].count, 3);
        assert_eq!(t["inner"].count, 3);
        assert!(t["inner"].seconds >= 0.006, "{t:?}");
        assert!(t["outer"].seconds >= t["inner"].seconds, "{t:?}");
        times.reset();
        assert!(times.totals().is_empty());
    }
}

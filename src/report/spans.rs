//! Time spent in each span of a run, by name: a tracing layer (`SpanTimes`) that
//! adds up how long each span was entered, so a report can split a step into
//! forward, recompute, head, backward and optimizer without a trace file.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
/// the totals while (or after) it is installed; install it with its [`filter`]
/// (`times.clone().with_filter(times.filter())`) so that [`set_on`]`(false)` turns
/// its spans off, not just its counting.
///
/// [`filter`]: SpanTimes::filter
/// [`set_on`]: SpanTimes::set_on
#[derive(Clone, Debug)]
pub struct SpanTimes {
    state: Arc<Mutex<State>>,
    on: Arc<AtomicBool>,
    skip_inside: Option<&'static str>,
}

/// The totals, and the spans entered and not yet exited (innermost last).
#[derive(Debug, Default)]
struct State {
    totals: BTreeMap<&'static str, SpanTotal>,
    open: Vec<(Id, &'static str, Instant)>,
}

impl Default for SpanTimes {
    fn default() -> Self {
        SpanTimes {
            state: Arc::default(),
            on: Arc::new(AtomicBool::new(true)),
            skip_inside: None,
        }
    }
}

impl SpanTimes {
    /// An empty tally.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tally, leaving out the spans inside a span named `name` (that span itself
    /// is totalled): validation's forward passes are not the training step's.
    pub fn excluding(mut self, name: &'static str) -> Self {
        self.skip_inside = Some(name);
        self
    }

    /// The totals so far, by span name.
    pub fn totals(&self) -> BTreeMap<&'static str, SpanTotal> {
        self.state
            .lock()
            .map(|t| t.totals.clone())
            .unwrap_or_default()
    }

    /// Forgets the totals so far (after a warm-up, say).
    pub fn reset(&self) {
        if let Ok(mut t) = self.state.lock() {
            t.totals.clear();
        }
    }

    /// Turns the timing on or off: off, the layer's filter enables none of the spans
    /// it would time, so (with no other layer wanting them) they cost nothing.
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// The per-layer filter that [`set_on`](SpanTimes::set_on) controls.
    pub fn filter<S>(&self) -> impl tracing_subscriber::layer::Filter<S> + 'static
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let on = self.on.clone();
        tracing_subscriber::filter::dynamic_filter_fn(move |_, _| on.load(Ordering::Relaxed))
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanTimes {
    fn on_new_span(&self, _: &Attributes<'_>, _: &Id, _: Context<'_, S>) {}

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(meta) = ctx.metadata(id) else { return };
        if let Ok(mut t) = self.state.lock() {
            t.open.push((id.clone(), meta.name(), Instant::now()));
        }
    }

    fn on_exit(&self, id: &Id, _: Context<'_, S>) {
        let now = Instant::now();
        let Ok(mut t) = self.state.lock() else { return };
        // Spans exit innermost first; one that does not is found further down.
        let Some(i) = t.open.iter().rposition(|(open, _, _)| open == id) else {
            return;
        };
        let (_, name, at) = t.open.remove(i);
        let inside = self
            .skip_inside
            .is_some_and(|skip| t.open[..i].iter().any(|(_, n, _)| *n == skip));
        if !inside {
            let e = t.totals.entry(name).or_default();
            e.seconds += now.duration_since(at).as_secs_f64();
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

    /// Spans inside an excluded one are not totalled; the excluded span is. Off, the
    /// filter keeps them from the layer.
    #[test]
    fn excluded_and_off_spans_are_not_totalled() {
        let times = SpanTimes::new().excluding("validation");
        let layer = times.clone().with_filter(times.filter());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            {
                let _step = tracing::info_span!("step").entered();
                let _f = tracing::trace_span!("forward").entered();
            }
            {
                let _v = tracing::info_span!("validation").entered();
                let _f = tracing::trace_span!("forward").entered();
            }
            times.set_on(false);
            {
                let _step = tracing::info_span!("step").entered();
            }
            times.set_on(true);
            let _step = tracing::info_span!("step").entered();
        });
        let t = times.totals();
        assert_eq!(t["forward"].count, 1, "{t:?}");
        assert_eq!(t["validation"].count, 1, "{t:?}");
        assert_eq!(t["step"].count, 2, "{t:?}");
    }
}

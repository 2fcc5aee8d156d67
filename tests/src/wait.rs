//! Waiting on a condition without panicking: [`until`] polls a check with a growing pause (10 ms
//! doubling to 200 ms) until it answers `Some`, or gives up with an error naming what it waited
//! for. For the harness of real processes and the fault suite, which report a failure instead of
//! ending the run; tests that may panic use `infra::testing::eventually`.

use std::future::Future;
use std::time::Duration;

/// Poll `check` until it returns `Some`, for at most `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_once_the_condition_holds_and_names_what_it_waited_for() {
        let mut calls = 0;
        let got = until("the third call", Duration::from_secs(5), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got.unwrap(), 3);
        let err = until("never", Duration::from_millis(50), || async { None::<()> }).await.unwrap_err();
        assert!(err.to_string().contains("waiting for: never"), "{err}");
    }
}

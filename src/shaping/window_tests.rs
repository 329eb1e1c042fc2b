use super::*;

fn rules() -> WindowRules {
    WindowRules {
        limit: 20,
        initial: 5,
        positive: Feedback::PerWindow,
        negative: Feedback::PerWindow,
        failed_cohort_limit: 1,
    }
}

#[test]
fn starts_at_the_initial_concurrency() {
    assert_eq!(Window::new(&rules()).size(), 5);
}

#[test]
fn grows_by_one_per_window_of_successes_while_busy_enough() {
    let rules = rules();
    let mut window = Window::new(&rules);
    // 1/5 per success: the fifth success makes it 6.
    for _ in 0..4 {
        window.success(&rules, 5);
        assert_eq!(window.size(), 5);
    }
    window.success(&rules, 5);
    assert_eq!(window.size(), 6);
    // Idle (nothing in progress): window 6 is not below 0 + 5, no growth.
    for _ in 0..20 {
        window.success(&rules, 0);
    }
    assert_eq!(window.size(), 6);
}

#[test]
fn never_grows_past_the_limit() {
    let rules = rules();
    let mut window = Window::new(&rules);
    for _ in 0..1000 {
        window.success(&rules, 20);
    }
    assert_eq!(window.size(), 20);
}

#[test]
fn a_failure_shrinks_at_once_and_a_cohort_of_failures_kills() {
    let rules = rules();
    let mut window = Window::new(&rules);
    // qmgr: failure starts at 0, so the first failure takes a whole step.
    assert!(!window.failure(&rules));
    assert_eq!(window.size(), 4);
    // fail_cohorts: 1/5 + 1/4 + 1/4 + 1/4 = 0.95 (the fourth failure
    // shrinks it to 3), then + 1/3 >= 1: dead.
    assert!(!window.failure(&rules));
    assert!(!window.failure(&rules));
    assert!(!window.failure(&rules));
    assert!(window.failure(&rules));
}

#[test]
fn a_success_restarts_the_cohort_count() {
    let rules = rules();
    let mut window = Window::new(&rules);
    for _ in 0..3 {
        assert!(!window.failure(&rules));
    }
    window.success(&rules, 1);
    for _ in 0..3 {
        assert!(!window.failure(&rules));
    }
}

#[test]
fn no_cohort_limit_never_kills_and_the_window_stays_at_least_one() {
    let rules = WindowRules {
        failed_cohort_limit: 0,
        ..rules()
    };
    let mut window = Window::new(&rules);
    for _ in 0..100 {
        assert!(!window.failure(&rules));
    }
    assert_eq!(window.size(), 1);
}

#[test]
fn revive_takes_the_busy_count_or_the_initial_window() {
    let rules = rules();
    let mut window = Window::new(&rules);
    window.revive(&rules, 3);
    assert_eq!(window.size(), 3);
    window.revive(&rules, 0);
    assert_eq!(window.size(), 5);
}

#[test]
fn cap_and_reload_limit() {
    let rules = rules();
    let mut window = Window::new(&rules);
    window.cap(2);
    assert_eq!(window.size(), 2);
    let mut window = Window::new(&rules);
    window.limit_to(&WindowRules { limit: 3, ..rules });
    assert_eq!(window.size(), 3);
}

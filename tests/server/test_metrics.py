"""/metrics: the active strategy and the Check decisions, in Prometheus text format."""

from __future__ import annotations

from extauthz.server.metrics import Metrics
from extauthz.strategies import StoreStrategy


def test_the_active_strategy_is_the_only_one_set() -> None:
    text = Metrics({"version": "1", "node_id": "n1", "store_strategy": "replicated"}).render()
    assert 'extauthz_store_strategy{strategy="replicated"} 1' in text
    assert 'extauthz_store_strategy{strategy="central"} 0' in text
    assert 'extauthz_store_strategy{strategy="sticky"} 0' in text
    assert 'extauthz_info{version="1",node_id="n1",store_strategy="replicated"} 1' in text


def test_every_strategy_has_exactly_one_sample() -> None:
    text = Metrics({"store_strategy": "sticky"}).render()
    samples = [line for line in text.splitlines() if line.startswith("extauthz_store_strategy{")]
    assert [line.split('"')[1] for line in samples] == [s.value for s in StoreStrategy]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in samples) == 1


def test_decisions_are_counted_by_decision_and_reason() -> None:
    metrics = Metrics({"store_strategy": "central"})
    for _ in range(3):
        metrics.count_decision("allow", "session_valid")
    metrics.count_decision("deny", "unknown_session")
    text = metrics.render()
    assert 'extauthz_check_decisions_total{decision="allow",reason="session_valid"} 3' in text
    assert 'extauthz_check_decisions_total{decision="deny",reason="unknown_session"} 1' in text


def test_label_values_are_escaped() -> None:
    text = Metrics({"node_id": 'a"b\\c\nd', "store_strategy": "sticky"}).render()
    assert 'node_id="a\\"b\\\\c\\nd"' in text
    unescaped = [line.replace("\\\\", "").replace('\\"', "") for line in text.splitlines()]
    assert all(line.count('"') % 2 == 0 for line in unescaped)  # one sample per line


def test_session_updates_are_counted_by_result_and_reason() -> None:
    metrics = Metrics({"store_strategy": "central"})
    assert "extauthz_session_updates_total{" not in metrics.render()
    metrics.count_session_update("applied", "merge_patch")
    metrics.count_session_update("applied", "merge_patch")
    metrics.count_session_update("refused", "key_not_allowed")
    metrics.count_session_update("dropped_cookie", 'odd"cluster')
    text = metrics.render()
    assert "# TYPE extauthz_session_updates_total counter" in text
    assert 'extauthz_session_updates_total{result="applied",reason="merge_patch"} 2' in text
    assert 'extauthz_session_updates_total{result="refused",reason="key_not_allowed"} 1' in text
    dropped = 'extauthz_session_updates_total{result="dropped_cookie",reason="odd\\"cluster"} 1'
    assert dropped in text

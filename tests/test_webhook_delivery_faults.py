"""Webhooks that arrive late, twice, out of order or never, for every registered emulator, and the run store.

Each provider's webhook is a hint (chalicelib/webhooks.py): the status API decides and the poller is the
safety net. So whatever the delivery fault, a full rotation in the embedded runtime must end SUCCEEDED with
each target verified exactly once, every delivery the rotator received answered 2xx, and no alert. The
providers are the registry's names, as in tests/test_provider_contract.py: a new emulator runs all of this
with no edit here. The first half checks the faults themselves on one emulator, with a plain receiver.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chalicelib.deps import get_deps
from local.emulators._runs import RunStore
from local.emulators.base import emulators
from local.emulators.github import GitHubEmulator
from local.world import World
from tests.conftest import new_user_name
from tests.emulator_fixtures import Receiver, receiving
from tests.invariants import (
    alerts_for,
    assert_lock_released,
    assert_no_pipeline_holds_a_dead_key,
    assert_one_active_key_everywhere,
)

NAMES = sorted(emulators())
FAULTS = ["late", "twice", "out of order", "never"]
#: Longer than the runtime's poll interval (0.5 s, tests/conftest.py) many times over: the poller has
#: confirmed every run long before its webhook goes out.
LATE_SECONDS = 4.0


# -- the faults, on one emulator and a plain receiver ----------------------------------------------------


@pytest.fixture
def hooks() -> Iterator[tuple[GitHubEmulator, Receiver]]:
    with receiving("/hook") as receiver, GitHubEmulator(
        token="t", aws_endpoint_url="http://127.0.0.1:9", webhook_url=receiver.url, webhook_secret="s"
    ) as gh:
        yield gh, receiver


def _send(gh: GitHubEmulator, delivery_id: str, *, stream: str = "") -> None:
    gh._send_delivery(gh._record_delivery(delivery_id, {"X-GitHub-Delivery": delivery_id},
                                          delivery_id.encode(), stream=stream))


def _arrived(receiver: Receiver, count: int) -> list[str]:
    return [body.decode() for _, body in receiver.wait_for(count)]


def test_twice_sends_the_same_delivery_id_and_bytes_again(hooks: tuple[GitHubEmulator, Receiver]) -> None:
    gh, receiver = hooks
    gh.duplicate_webhooks = True
    _send(gh, "d-1")
    (first, second) = receiver.wait_for(2)
    assert first == second and first[0]["X-GitHub-Delivery"] == "d-1"
    (delivery,) = gh.deliveries()
    assert delivery["statuses"] == [204, 204] and delivery["status"] == 204


def test_late_delivers_after_the_delay_and_wait_for_webhooks_waits_for_it(
    hooks: tuple[GitHubEmulator, Receiver],
) -> None:
    gh, receiver = hooks
    gh.webhook_delay = 0.6
    started = time.monotonic()
    _send(gh, "d-1")
    assert not receiver.received and gh.deliveries()[0]["status"] is None, "nothing sent yet"
    assert not gh.wait_for_webhooks(timeout=0.1)
    assert gh.wait_for_webhooks(timeout=5)
    assert time.monotonic() - started >= 0.6
    assert _arrived(receiver, 1) == ["d-1"] and gh.deliveries()[0]["status"] == 204


def test_out_of_order_sends_each_delivery_after_the_next(hooks: tuple[GitHubEmulator, Receiver]) -> None:
    gh, receiver = hooks
    gh.reorder_webhooks = True
    for delivery_id in ("a", "b", "c", "d"):
        _send(gh, delivery_id)
    assert _arrived(receiver, 4) == ["b", "a", "d", "c"]
    assert [d["sent"] for d in gh.deliveries()] == [[2], [1], [4], [3]]
    # Sent after its successor, a held delivery no longer waits for its fallback release (reorder_window, 5 s).
    assert gh.wait_for_webhooks(timeout=1)


def test_out_of_order_within_one_stream_leaves_other_streams_alone(hooks: tuple[GitHubEmulator, Receiver]) -> None:
    gh, receiver = hooks
    gh.reorder_webhooks = True
    # Two runs' "in progress" then "completed", interleaved as two parallel builds send them.
    for delivery_id, run in (("a-started", "a"), ("b-started", "b"), ("a-done", "a"), ("b-done", "b")):
        _send(gh, delivery_id, stream=run)
    assert _arrived(receiver, 4) == ["a-done", "a-started", "b-done", "b-started"]


def test_a_held_delivery_with_no_successor_goes_out_alone(hooks: tuple[GitHubEmulator, Receiver]) -> None:
    gh, receiver = hooks
    gh.reorder_webhooks, gh.reorder_window = True, 0.3
    _send(gh, "only")
    assert not receiver.received
    assert gh.wait_for_webhooks(timeout=5)
    assert _arrived(receiver, 1) == ["only"]


def test_reset_faults_switches_every_delivery_fault_off(hooks: tuple[GitHubEmulator, Receiver]) -> None:
    gh, receiver = hooks
    gh.drop_webhooks, gh.duplicate_webhooks, gh.reorder_webhooks, gh.webhook_delay = True, True, True, 9.0
    gh.reset_faults()
    assert (gh.drop_webhooks, gh.duplicate_webhooks, gh.reorder_webhooks, gh.webhook_delay) == (False, False,
                                                                                                 False, 0.0)
    _send(gh, "now")
    assert _arrived(receiver, 1) == ["now"] and gh.deliveries()[0]["statuses"] == [204]


def test_never_records_and_sends_nothing(hooks: tuple[GitHubEmulator, Receiver]) -> None:
    gh, receiver = hooks
    gh.drop_webhooks = True
    _send(gh, "lost")
    assert gh.deliveries() == [] and gh.wait_for_webhooks(timeout=1) and receiver.received == []


# -- every fault x every emulator, on a full rotation ------------------------------------------------------


def _projects(provider: str, user: str) -> list[str]:
    # Two targets on the same CI: two runs, so "out of order" has a next delivery to swap with.
    return [f"acme/{user}-{s}" if provider == "github" else f"{provider}:acme/{user}-{s}" for s in "ab"]


def _switch_on(ci: Any, fault: str) -> None:
    if fault == "late":
        ci.webhook_delay = LATE_SECONDS
    elif fault == "twice":
        ci.duplicate_webhooks = True
    elif fault == "out of order":
        # Long enough that the other run's delivery always comes first (both builds run in parallel).
        ci.reorder_webhooks, ci.reorder_window = True, 20.0
    else:
        ci.drop_webhooks = True


def _swapped(sent: list[dict[str, Any]]) -> bool:
    """Some delivery went out before one recorded earlier."""
    firsts = [d["sent"][0] for d in sent]
    return any(later < earlier for earlier, later in itertools.combinations(firsts, 2))


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("provider", NAMES)
def test_a_rotation_ends_correctly_whatever_happens_to_its_webhooks(
    clean_world: World, provider: str, fault: str
) -> None:
    user = new_user_name(f"wd{provider[:3]}")
    clean_world.add_user(user, _projects(provider, user))
    ci = clean_world.emulator(provider)
    before = len(ci.deliveries())
    _switch_on(ci, fault)

    result = clean_world.rotate(user)
    assert ci.wait_for_webhooks(timeout=60), "every late or held delivery was sent"
    sent = ci.deliveries()[before:]

    assert result["status"] == "SUCCEEDED", (provider, fault)
    assert_one_active_key_everywhere(clean_world, user)
    assert_no_pipeline_holds_a_dead_key(clean_world, user)
    assert_lock_released(user)
    # The rotation's own INFO outcomes only ("new key live", "rotated"): a fault in delivery is not a failure.
    assert [a["subject"] for a in alerts_for(clean_world, user) if a["severity"] != "INFO"] == []
    ledger = get_deps().ledger
    rotation = ledger.rotation(user, ledger.rotations(user)[-1]["rotation_id"])
    targets = list(rotation["targets"].values())
    assert len(targets) == 2 and all(t["status"] == "verified" for t in targets), targets
    resolved_by = {t["resolved_by"] for t in targets}
    # Every POST the rotator answered, the repeated ones included, got a 2xx: nothing for the CI to retry.
    answers = [status for d in sent for status in d["statuses"]]
    assert all(status is not None and 200 <= status < 300 for status in answers), answers

    if fault == "never":
        assert sent == [] and resolved_by == {"poller"}
    elif fault == "late":
        assert sent and resolved_by == {"poller"}, "the late webhooks came after the poller had confirmed"
    elif fault == "twice":
        assert sent and all(len(d["statuses"]) == 2 for d in sent)
    else:
        assert len(sent) >= 2 and _swapped(sent), [d["sent"] for d in sent]


# -- the run store ------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, run_id: int, number: int) -> None:
        self.id, self.number, self.status, self.result = run_id, number, "queued", None


def test_the_run_store_allocates_ids_and_numbers_and_finds_runs_by_id_and_project() -> None:
    store = RunStore[_Run](threading.RLock(), ids=itertools.count(100).__next__, clock=lambda: 42.0)
    a1 = store.create("a", _Run, inputs={"nonce": "n1"})
    b1 = store.create("b", _Run)
    a2 = store.create("a", _Run)

    assert (a1.id, a1.number, b1.id, b1.number, a2.id, a2.number) == (100, 1, 101, 1, 102, 2)
    assert store.get(101) is b1 and store.find(999) is None and len(store) == 3
    with pytest.raises(KeyError):
        store.get(999)
    assert store.of("a") == [a1, a2] and store.of("nope") == [] and store.all() == [a1, b1, a2]
    assert store.project_of(b1) == "b" and store.inputs_of(a1) == {"nonce": "n1"} and store.created_of(a1) == 42.0
    store.inputs_of(a1)["nonce"] = "changed"
    assert store.inputs_of(a1) == {"nonce": "n1"}, "a copy: the trigger's inputs cannot change afterwards"


def test_the_run_store_updates_known_fields_only_and_only_its_own_runs() -> None:
    store = RunStore[_Run](threading.RLock(), ids=itertools.count(1).__next__)
    run = store.create("p", _Run)
    store.update(run, status="completed", result="success")
    assert (run.status, run.result) == ("completed", "success")
    with pytest.raises(AttributeError, match="conclusoin"):
        store.update(run, status="queued", conclusoin="failure")
    assert run.status == "completed", "nothing was set when one field was wrong"
    with pytest.raises(KeyError):
        store.update(_Run(7, 1), status="completed")


def test_the_run_store_waits_until_a_run_settles() -> None:
    store = RunStore[_Run](threading.RLock(), ids=itertools.count(1).__next__)
    run = store.create("p", _Run)
    with pytest.raises(TimeoutError, match="run 1 not finished"):
        store.wait(1, timeout=0.05)
    threading.Timer(0.1, store.settle, args=(run,)).start()
    assert store.wait(1, timeout=5) is run and store.is_settled(run)


def test_the_run_store_is_safe_under_concurrent_creates() -> None:
    store = RunStore[_Run](threading.RLock(), ids=itertools.count(1).__next__)

    def create_many(project: str) -> None:
        for _ in range(200):
            store.create(project, _Run)

    threads = [threading.Thread(target=create_many, args=(f"p{i % 2}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runs = store.all()
    assert len({r.id for r in runs}) == len(runs) == 1600
    for project in ("p0", "p1"):
        assert sorted(r.number for r in store.of(project)) == list(range(1, 801))

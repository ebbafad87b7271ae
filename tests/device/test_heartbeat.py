"""The adaptive heartbeat policy (pure logic, fake clock)."""
from __future__ import annotations

import pytest

from pushcore.device.heartbeat import HeartbeatPolicy, NetworkHeartbeat


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def succeed(policy: HeartbeatPolicy, times: int) -> None:
    for _ in range(times):
        policy.on_success()


def test_defaults_follow_published_practice():
    policy = HeartbeatPolicy()
    assert policy.interval == 210.0  # floor: 3.5 minutes
    succeed(policy, 4)
    assert policy.interval == 210.0  # not yet: 5 successes are needed
    assert policy.on_success() is True
    assert policy.interval == 270.0  # +60 s
    succeed(policy, 5)
    assert policy.interval == 330.0


def test_caps_at_ten_minutes():
    policy = HeartbeatPolicy()
    succeed(policy, 5 * 20)
    assert policy.interval == 600.0
    assert policy.on_success() is False


def test_failure_backs_off_and_holds():
    policy = HeartbeatPolicy()
    succeed(policy, 15)  # 210 -> 270 -> 330 -> 390
    assert policy.interval == 390.0
    assert policy.on_failure() is True
    assert policy.interval == 370.0  # 390 - 20
    assert policy.held
    succeed(policy, 50)  # held: successes never probe upward again
    assert policy.interval == 370.0


def test_failure_never_goes_below_floor():
    policy = HeartbeatPolicy()
    policy.on_failure()
    assert policy.interval == 210.0
    assert policy.held


def test_repeated_failures_keep_backing_off_to_the_floor():
    policy = HeartbeatPolicy()
    succeed(policy, 10)  # 330
    policy.on_failure()
    policy.on_failure()
    assert policy.interval == 290.0
    for _ in range(10):
        policy.on_failure()
    assert policy.interval == 210.0


def test_a_failure_resets_the_success_streak():
    policy = HeartbeatPolicy(hold_for=0, clock=FakeClock())
    succeed(policy, 4)
    policy.on_failure()
    succeed(policy, 4)
    assert policy.interval == 210.0
    policy.on_success()
    assert policy.interval == 270.0


def test_hold_for_resumes_probing_after_the_hold_with_a_fake_clock():
    clock = FakeClock()
    policy = HeartbeatPolicy(hold_for=1800, clock=clock)
    succeed(policy, 10)  # 330
    policy.on_failure()  # 310, held
    clock.now += 1799
    succeed(policy, 10)
    assert policy.interval == 310.0 and policy.held
    clock.now += 1
    succeed(policy, 5)  # the hold is over: a fresh streak of 5 steps up
    assert not policy.held
    assert policy.interval == 370.0


def test_remembers_per_network():
    policy = HeartbeatPolicy(network="cell")
    succeed(policy, 10)
    policy.on_failure()  # cell: 310, held
    policy.set_network("wifi")
    assert policy.interval == 210.0 and not policy.held
    succeed(policy, 5)
    assert policy.interval == 270.0
    policy.set_network("cell")
    assert policy.interval == 310.0 and policy.held
    policy.set_network("wifi")
    assert policy.interval == 270.0 and not policy.held
    assert set(policy.memory) == {"cell", "wifi"}


def test_a_network_change_breaks_the_streak():
    policy = HeartbeatPolicy(network="a")
    succeed(policy, 4)
    policy.set_network("b")
    policy.set_network("a")
    policy.on_success()
    assert policy.interval == 210.0


def test_memory_dict_is_shared_with_the_caller():
    memory = {"home": NetworkHeartbeat(interval=400.0, held=True)}
    policy = HeartbeatPolicy(network="home", memory=memory)
    assert policy.interval == 400.0 and policy.held
    policy.on_failure()
    assert memory["home"].interval == 380.0
    # a second policy built on the persisted memory resumes there
    assert HeartbeatPolicy(network="home", memory=memory).interval == 380.0


def test_server_grant_caps_the_interval():
    policy = HeartbeatPolicy()
    policy.grant(30, 300)
    succeed(policy, 50)
    assert policy.interval == 300.0
    policy.on_failure()
    assert policy.interval == 280.0


def test_server_grant_below_the_floor_wins():
    policy = HeartbeatPolicy()
    policy.grant(10, 120)
    assert policy.interval == 120.0
    policy.on_failure()
    assert policy.interval == 120.0  # cannot go below what the grant lets it reach
    assert policy.bounds() == (120.0, 120.0)


def test_server_grant_above_the_cap_wins():
    policy = HeartbeatPolicy()
    policy.grant(900, 1200)
    assert policy.interval == 900.0
    succeed(policy, 20)
    assert policy.interval == 900.0


def test_grant_max_zero_means_unbounded():
    policy = HeartbeatPolicy()
    policy.grant(0, 0)
    succeed(policy, 100)
    assert policy.interval == 600.0


def test_grant_raising_the_interval_steps_from_the_granted_value():
    policy = HeartbeatPolicy()
    policy.grant(240, 600)
    assert policy.interval == 240.0
    succeed(policy, 5)
    assert policy.interval == 300.0


def test_scale_makes_it_run_in_seconds():
    policy = HeartbeatPolicy(scale=0.01)
    assert policy.interval == pytest.approx(2.1)
    succeed(policy, 5)
    assert policy.interval == pytest.approx(2.7)
    policy.on_failure()
    assert policy.interval == pytest.approx(2.5)
    succeed(policy, 1000)
    assert policy.interval == pytest.approx(2.5)


def test_finds_a_nat_timeout():
    """Driven against a simulated NAT that drops mappings idle for 333 s."""
    nat_timeout = 333.0
    policy = HeartbeatPolicy()
    for _ in range(200):
        if policy.interval < nat_timeout:
            policy.on_success()
        else:
            policy.on_failure()
    assert policy.held
    # 210 + 60k probes: 330 works, 390 fails, 370 fails, 350 fails, settles on 330
    assert policy.interval == 330.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"floor": 0},
        {"floor": 700, "cap": 600},
        {"successes_to_step": 0},
        {"step_up": -1},
        {"back_off": -1},
        {"scale": 0},
    ],
)
def test_rejects_bad_configuration(kwargs):
    with pytest.raises(ValueError):
        HeartbeatPolicy(**kwargs)


def test_rejects_a_bad_grant():
    policy = HeartbeatPolicy()
    with pytest.raises(ValueError):
        policy.grant(100, 50)
    with pytest.raises(ValueError):
        policy.grant(-1, 50)

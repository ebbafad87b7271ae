"""Adaptive heartbeat interval: probe upward while heartbeats succeed, back off on failure.

Mobile networks drop idle TCP connections when a NAT or firewall forgets the
mapping; each carrier (and each Wi-Fi router) has its own timeout, usually
somewhere between 4 and 30 minutes. A heartbeat more frequent than needed
wastes battery; one less frequent than the NAT timeout loses the connection
silently. Published mobile practice (the "smart heartbeat" of large messaging
apps) finds the longest interval that survives, per network:

* start at a safe **floor** (3.5 minutes);
* after **5** heartbeats in a row succeed at the current interval, **step up**
  by 60 seconds;
* when a heartbeat **fails** (no answer within the timeout: the NAT dropped
  the mapping), **back off** by 20 seconds and **hold** there: the interval
  that failed is known to be too long, the one below it is the best known;
* never go above the **cap** (10 minutes);
* **remember** the result per network name, so moving from Wi-Fi back to the
  cellular network resumes at the interval found there before.

The server's WELCOME grants bounds (``heartbeat_min`` .. ``heartbeat_max``)
that always win over the policy's own floor and cap.

Every duration is configurable and ``scale`` multiplies all of them, so tests
run the same logic in fractions of a second. This module is pure logic: it
does no I/O and reads time only through the ``clock`` it is given, so it is
unit-tested with a fake clock; :class:`pushcore.Client` feeds it successes and
failures and applies :attr:`HeartbeatPolicy.interval` to its connection.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HeartbeatPolicy", "NetworkHeartbeat"]

DEFAULT_FLOOR = 210.0  # 3.5 minutes
DEFAULT_CAP = 600.0  # 10 minutes
DEFAULT_STEP_UP = 60.0
DEFAULT_BACK_OFF = 20.0
DEFAULT_SUCCESSES_TO_STEP = 5


@dataclass
class NetworkHeartbeat:
    """What the policy knows about one network.

    ``interval`` is the policy's own choice in seconds (before the server's
    grant is applied); ``held`` is true once a failure fixed it;
    ``held_since`` is the clock value of that failure; ``successes`` counts
    heartbeats in a row that succeeded at ``interval``.
    """

    interval: float
    held: bool = False
    held_since: float = 0.0
    successes: int = 0


class HeartbeatPolicy:
    """Chooses the heartbeat interval of one device (see the module docstring).

    Parameters (seconds unless said otherwise; all multiplied by *scale*):

    floor, cap
        the policy's own bounds; it starts at *floor*.
    step_up
        added after *successes_to_step* (a count) successes in a row.
    back_off
        taken off the interval that failed; the result is held.
    hold_for
        after this long held, the next success resumes probing upward
        (``None``: hold for good on this network — the published behaviour).
    network
        name of the network the device starts on.
    memory
        a dict ``{network name: NetworkHeartbeat}`` to start from (for example
        one restored by the application); the policy keeps using and
        updating this very dict, so the caller may persist it.
    clock
        a function returning seconds (default :func:`time.monotonic`).

    Feed it with :meth:`on_success` / :meth:`on_failure`; apply
    :attr:`interval`. :meth:`grant` applies the server's bounds.
    """

    def __init__(
        self,
        *,
        floor: float = DEFAULT_FLOOR,
        cap: float = DEFAULT_CAP,
        step_up: float = DEFAULT_STEP_UP,
        back_off: float = DEFAULT_BACK_OFF,
        successes_to_step: int = DEFAULT_SUCCESSES_TO_STEP,
        hold_for: float | None = None,
        scale: float = 1.0,
        network: str = "default",
        memory: dict[str, NetworkHeartbeat] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        if not 0 < floor <= cap:
            raise ValueError(f"need 0 < floor <= cap, got floor={floor!r} cap={cap!r}")
        if step_up < 0 or back_off < 0:
            raise ValueError("step_up and back_off must be >= 0")
        if successes_to_step < 1:
            raise ValueError(f"successes_to_step must be >= 1, got {successes_to_step!r}")
        self.floor = floor * scale
        self.cap = cap * scale
        self.step_up = step_up * scale
        self.back_off = back_off * scale
        self.successes_to_step = successes_to_step
        self.hold_for = None if hold_for is None else hold_for * scale
        self._clock = clock
        self.memory: dict[str, NetworkHeartbeat] = {} if memory is None else memory
        self._grant_min = 0.0
        self._grant_max = float("inf")
        self._network = network
        self._state = self._load(network)

    # -- bounds ---------------------------------------------------------------

    def grant(self, heartbeat_min: float, heartbeat_max: float) -> None:
        """Apply the server's bounds (WELCOME); ``heartbeat_max == 0`` means none.

        The grant wins over the policy's floor and cap: the interval always
        lies within ``[heartbeat_min, heartbeat_max]``.
        """
        if heartbeat_min < 0 or heartbeat_max < 0:
            raise ValueError("heartbeat bounds must be >= 0")
        self._grant_min = float(heartbeat_min)
        self._grant_max = float(heartbeat_max) if heartbeat_max else float("inf")
        if self._grant_max < self._grant_min:
            raise ValueError(
                f"heartbeat_max {heartbeat_max} < heartbeat_min {heartbeat_min} in the grant"
            )

    def bounds(self) -> tuple[float, float]:
        """``(low, high)``: the policy's floor and cap after the server's grant."""
        gmin, gmax = self._grant_min, self._grant_max
        low = min(max(self.floor, gmin), gmax)
        high = max(min(self.cap, gmax), gmin)
        return low, high

    def _clamp(self, value: float) -> float:
        low, high = self.bounds()
        return min(max(value, low), high)

    # -- state ----------------------------------------------------------------

    @property
    def interval(self) -> float:
        """The heartbeat interval to use now, in seconds, within the grant."""
        return self._clamp(self._state.interval)

    @property
    def held(self) -> bool:
        """True once a failure fixed the interval on the current network."""
        return self._state.held

    @property
    def network(self) -> str:
        """Name of the network the device is on."""
        return self._network

    def set_network(self, name: str) -> None:
        """Switch to network *name*: resume what was learnt there, else start at the floor."""
        if name == self._network:
            return
        self._network = name
        self._state = self._load(name)

    def _load(self, name: str) -> NetworkHeartbeat:
        state = self.memory.get(name)
        if state is None:
            state = self.memory[name] = NetworkHeartbeat(self.floor)
        state.successes = 0  # a streak never carries over a network change
        return state

    # -- events ---------------------------------------------------------------

    def on_success(self) -> bool:
        """A heartbeat at :attr:`interval` was answered. Returns True if the interval changed."""
        state = self._state
        if state.held:
            if self.hold_for is None or self._clock() - state.held_since < self.hold_for:
                return False
            state.held = False  # held long enough: probe upward again
            state.successes = 0
        before = self.interval
        state.successes += 1
        if state.successes < self.successes_to_step:
            return False
        state.successes = 0
        _, high = self.bounds()
        # Step from the interval actually in use (the grant may have raised it).
        state.interval = min(before + self.step_up, high)
        return self.interval != before

    def on_failure(self) -> bool:
        """A heartbeat at :attr:`interval` went unanswered. Returns True if the interval changed.

        The next interval is 20 s (``back_off``) below the one that failed,
        never below the floor, and it is held.
        """
        state = self._state
        before = self.interval
        state.interval = self._clamp(before - self.back_off)
        state.held = True
        state.held_since = self._clock()
        state.successes = 0
        return self.interval != before

    def __repr__(self) -> str:
        return (
            f"HeartbeatPolicy(network={self._network!r}, interval={self.interval:g}, "
            f"held={self.held}, successes={self._state.successes})"
        )

"""What simulated devices do: heartbeat policy, churn, NAT timeouts, link faults, connect rate.

A :class:`Profile` is plain data, shared by every device of a
:class:`pushcore.sim.simulator.Simulator` (per-device state stays in the
simulator, small). The parsers turn the command line's compact strings
into these values with errors that say what is expected.

Heartbeat
    ``adaptive`` (default): :class:`pushcore.device.heartbeat.HeartbeatPolicy`
    with the published values (3.5 min floor, +60 s after 5 successes,
    -20 s and hold after a failure, 10 min cap), all multiplied by
    ``heartbeat_scale`` so a run can show the search in seconds.
    ``fixed``: one interval (``heartbeat_fixed`` seconds). ``off``: no PING.
Churn
    each online device leaves after an exponentially distributed time
    (mean ``churn_online`` seconds; it closes cleanly, flushing its ACK),
    stays away for an exponential time (mean ``churn_offline``) and comes
    back, resuming from its last seq.
NAT
    a fraction ``nat_fraction`` of the devices sit behind a NAT that forgets
    an idle mapping after ``nat_timeout`` seconds: when the connection has
    been quiet that long, it silently stops carrying packets (see
    :mod:`pushcore.sim.simulator`); the device only learns it when its next
    heartbeat goes unanswered, which is how the adaptive policy finds the
    timeout.
Link faults
    each online device's connection is reset (RST, no ACK flushed) at
    random, ``reset_rate`` times per device per second on average.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from ..device.heartbeat import (
    DEFAULT_BACK_OFF,
    DEFAULT_CAP,
    DEFAULT_FLOOR,
    DEFAULT_STEP_UP,
    DEFAULT_SUCCESSES_TO_STEP,
    HeartbeatPolicy,
)

__all__ = ["Profile", "DEMO_PROFILE", "parse_heartbeat", "parse_churn", "parse_nat", "parse_rate"]

HEARTBEAT_MODES = ("adaptive", "fixed", "off")


@dataclass(frozen=True)
class Profile:
    """How the simulated devices behave (see the module docstring). Times are seconds."""

    heartbeat: str = "adaptive"
    heartbeat_fixed: float = 30.0
    heartbeat_scale: float = 1.0
    heartbeat_floor: float = DEFAULT_FLOOR
    heartbeat_cap: float = DEFAULT_CAP
    heartbeat_step_up: float = DEFAULT_STEP_UP
    heartbeat_back_off: float = DEFAULT_BACK_OFF
    heartbeat_successes: int = DEFAULT_SUCCESSES_TO_STEP
    pong_timeout: float = 10.0
    churn_online: float | None = None
    churn_offline: float = 5.0
    nat_timeout: float | None = None
    nat_fraction: float = 1.0
    reset_rate: float = 0.0
    connect_rate: float | None = 1000.0
    connect_timeout: float = 10.0
    backoff: tuple[float, float] = (0.5, 30.0)
    ack_delay: float = 0.05
    ack_every: int = 32
    page_size: int = 256
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.heartbeat not in HEARTBEAT_MODES:
            raise ValueError(f"heartbeat must be one of {HEARTBEAT_MODES}, got {self.heartbeat!r}")
        _positive("heartbeat_fixed", self.heartbeat_fixed)
        _positive("heartbeat_scale", self.heartbeat_scale)
        _positive("pong_timeout", self.pong_timeout)
        _positive("connect_timeout", self.connect_timeout)
        if self.churn_online is not None:
            _positive("churn_online", self.churn_online)
        _positive("churn_offline", self.churn_offline, allow_zero=True)
        if self.nat_timeout is not None:
            _positive("nat_timeout", self.nat_timeout)
        if not 0.0 <= self.nat_fraction <= 1.0:
            raise ValueError(f"nat_fraction must be within 0..1, got {self.nat_fraction!r}")
        _positive("reset_rate", self.reset_rate, allow_zero=True)
        if self.connect_rate is not None:
            _positive("connect_rate", self.connect_rate)
        initial, maximum = self.backoff
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff must be (initial, maximum) with 0 < initial <= maximum, got {self.backoff!r}")
        _positive("ack_delay", self.ack_delay)
        if self.ack_every < 1 or self.page_size < 1:
            raise ValueError("ack_every and page_size must be >= 1")
        # HeartbeatPolicy validates its own knobs; build one now so a bad profile fails here.
        if self.heartbeat == "adaptive":
            self.new_policy()

    def new_policy(self) -> HeartbeatPolicy | None:
        """A fresh per-device adaptive policy, or None when the heartbeat is not adaptive."""
        if self.heartbeat != "adaptive":
            return None
        return HeartbeatPolicy(
            floor=self.heartbeat_floor,
            cap=self.heartbeat_cap,
            step_up=self.heartbeat_step_up,
            back_off=self.heartbeat_back_off,
            successes_to_step=self.heartbeat_successes,
            scale=self.heartbeat_scale,
        )

    def gateway_heartbeat(self) -> tuple[float, float]:
        """Heartbeat bounds ``(min, max)`` for a gateway these devices fit.

        The minimum is 0, so no device is held above its NAT timeout by the
        gateway; the maximum covers the longest interval the devices use (at
        least 5 s). What the simulator's own gateway grants (no ``servers``).
        """
        longest = self.heartbeat_fixed if self.heartbeat == "fixed" else self.heartbeat_cap * self.heartbeat_scale
        return 0.0, float(max(5, math.ceil(longest) + 1))

    def with_(self, **changes: Any) -> Profile:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """The profile as JSON-able data (for the report)."""
        out: dict[str, Any] = {
            "heartbeat": self.heartbeat,
            "pong_timeout": self.pong_timeout,
            "connect_rate": self.connect_rate,
        }
        if self.heartbeat == "adaptive":
            s = self.heartbeat_scale
            out["heartbeat_policy"] = {
                "floor": self.heartbeat_floor * s, "cap": self.heartbeat_cap * s,
                "step_up": self.heartbeat_step_up * s, "back_off": self.heartbeat_back_off * s,
                "successes_to_step": self.heartbeat_successes, "scale": s,
            }
        elif self.heartbeat == "fixed":
            out["heartbeat_interval"] = self.heartbeat_fixed
        if self.churn_online is not None:
            out["churn"] = {"mean_online": self.churn_online, "mean_offline": self.churn_offline}
        if self.nat_timeout is not None:
            out["nat"] = {"timeout": self.nat_timeout, "fraction": self.nat_fraction}
        if self.reset_rate:
            out["reset_rate"] = self.reset_rate
        return out


def _positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


# The demo's devices: the published adaptive heartbeat run 250x faster (floor 0.84 s,
# +0.24 s after 2 successes, -0.08 s and hold after a failure, cap 2.4 s), a NAT of
# 1.45 s in front of a fifth of them (the policy should settle at 1.40 s),
# light churn and a few link resets, so a short run shows all of it.
DEMO_PROFILE = Profile(
    heartbeat="adaptive",
    heartbeat_scale=0.004,
    heartbeat_successes=2,
    pong_timeout=0.3,
    churn_online=30.0,
    churn_offline=0.5,
    nat_timeout=1.45,
    nat_fraction=0.2,
    reset_rate=0.004,
    connect_rate=2000.0,
    backoff=(0.05, 1.0),
)


# ---- command line parsers (ValueError with a message that says what is expected) ----------


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what}: {text!r} must be a finite number >= 0")
    return value


def parse_heartbeat(text: str) -> dict[str, Any]:
    """``adaptive``, ``adaptive:SCALE``, ``fixed:SECONDS`` or ``off`` → Profile fields."""
    mode, _, arg = text.partition(":")
    if mode == "adaptive":
        out: dict[str, Any] = {"heartbeat": "adaptive"}
        if arg:
            out["heartbeat_scale"] = _number(arg, "--heartbeat adaptive:SCALE")
        return out
    if mode == "fixed" and arg:
        return {"heartbeat": "fixed", "heartbeat_fixed": _number(arg, "--heartbeat fixed:SECONDS")}
    if mode == "off" and not arg:
        return {"heartbeat": "off"}
    raise ValueError(f"--heartbeat {text!r}: use adaptive, adaptive:SCALE, fixed:SECONDS or off")


def parse_churn(text: str) -> dict[str, Any]:
    """``MEAN_ONLINE:MEAN_OFFLINE`` seconds, or ``off``."""
    if text == "off":
        return {"churn_online": None}
    online, sep, offline = text.partition(":")
    if not sep:
        raise ValueError(f"--churn {text!r}: use MEAN_ONLINE:MEAN_OFFLINE seconds (e.g. 60:5) or off")
    return {"churn_online": _number(online, "--churn online"),
            "churn_offline": _number(offline, "--churn offline")}


def parse_nat(text: str) -> dict[str, Any]:
    """``SECONDS`` or ``SECONDS:FRACTION``, or ``off``."""
    if text == "off":
        return {"nat_timeout": None}
    timeout, sep, fraction = text.partition(":")
    out: dict[str, Any] = {"nat_timeout": _number(timeout, "--nat timeout")}
    if sep:
        out["nat_fraction"] = _number(fraction, "--nat fraction")
    return out


def parse_rate(text: str, what: str) -> float | None:
    """A rate per second, or ``0``/``off``/``unlimited`` for none."""
    if text in ("off", "unlimited", "0"):
        return None
    return _number(text, what)

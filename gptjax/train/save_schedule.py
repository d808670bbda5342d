"""When the loop saves: every `save_every` steps, at the end, and every `save_every_minutes`.

Every process of a multi-host run must save at the same step (an Orbax save is collective: a
process that does not join it hangs the others), yet their clocks differ. Asking process 0's
clock at every step would cost a cross-host collective per step, and that collective waits for
the step in flight, so the host could no longer run ahead of the device. Instead the processes
agree on a *target step* in advance:

- at a plan step, process 0 measures the seconds per step since the last save and sets the
  target to the step at which `save_every_minutes` will have passed; one broadcast shares it;
- plan steps are a pure function of the step and of broadcast values, so all processes plan
  (and broadcast) at the same steps: the first step after the (re)start or after a save, then
  again after as many steps as the interval has run (1, 2, 4, ...) but at most half way to the
  target, so a changing step time is re-measured as the target nears: O(log steps)
  broadcasts per save interval;
- between plan steps `due` compares the step with the target, with no collective.

The forecast uses the pace since the previous plan, so a save lands on the minute while the
step time holds, and later by at most what one re-plan window takes when the steps slow down
(planning stops when the target is under 2 * `_MIN_REPLAN` steps away).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

_MIN_REPLAN = 4  # steps: closer to the target than twice this, the plan is not refreshed


class SaveSchedule:
    """Which steps save. `share` gives every process process 0's value (identity on one)."""

    def __init__(
        self,
        checkpoint_config,
        total_steps: int,
        start_step: int,
        *,
        share: Callable[[int], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.every, self.total = checkpoint_config.save_every, total_steps
        self.seconds = 60.0 * checkpoint_config.save_every_minutes
        if share is None:
            from gptjax.train.multihost import primary_value as share
        self.share, self.clock = share, clock
        self._restart(start_step)

    def _restart(self, step: int) -> None:
        self.last_step, self.last_time = step, self.clock()
        self.plan_step, self.plan_time = self.last_step, self.last_time  # the latest measurement
        self.target: int | None = None  # the step of the next time-based save, once planned
        self.next_plan: int | None = step + 1 if self.seconds else None

    def due(self, step: int) -> bool:
        """Whether `step` saves: the same answer on every process. Call it at every step, on
        every process: at a plan step it takes part in one broadcast."""
        if step == self.next_plan:
            self._plan(step)
        if step % self.every == 0 or step == self.total:
            return True
        return self.target is not None and step >= self.target

    def saved(self, step: int) -> None:
        """A checkpoint of `step` was written: the wall-clock interval starts again."""
        self._restart(step)

    def _plan(self, step: int) -> None:
        now = self.clock()
        # The latest window's pace (since the previous plan) forecasts best when it changes.
        measured = step - self.plan_step
        seconds_per_step = max((now - self.plan_time) / measured, 1e-9)
        left = self.seconds - (now - self.last_time)
        ahead = 0 if left <= 0 else math.ceil(left / seconds_per_step)
        ahead = min(ahead, max(0, self.total - step))  # the last step saves anyway
        # Process 0's clock decides; the others take its target (one small broadcast).
        self.target = self.share(step + ahead)
        self.plan_step, self.plan_time = step, now
        distance = self.target - step
        if distance < 2 * _MIN_REPLAN:
            self.next_plan = None  # close enough: the target stands
        else:
            self.next_plan = step + min(step - self.last_step, distance // 2)

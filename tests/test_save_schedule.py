"""The save schedule: step- and time-based saves agreed by every process without a per-step
collective (a fake clock stands in for wall time; `share` for the broadcast)."""

import ml_collections
import pytest

from gptjax.train.save_schedule import SaveSchedule


def _config(every=1000, minutes=1.0):
    return ml_collections.ConfigDict(dict(save_every=every, save_every_minutes=minutes))


class Host:
    """One process: its own clock; `shared` counts the broadcasts it took part in."""

    def __init__(self, config, total, start=0, seconds_per_step=1.0, share=None):
        self.now, self.seconds_per_step, self.shared = 0.0, seconds_per_step, 0

        def counted(value):
            self.shared += 1
            return share(value) if share else value

        self.schedule = SaveSchedule(config, total, start, share=counted, clock=lambda: self.now)

    def step(self, step: int) -> bool:
        """Runs step `step` (time passes), saves when due; True if it saved."""
        self.now += self.seconds_per_step
        saved = self.schedule.due(step)
        if saved:
            self.schedule.saved(step)
        return saved


def _saves(host, steps, start=0):
    return [s for s in range(start + 1, steps + 1) if host.step(s)]


def test_step_based_saves_and_the_last_step_need_no_collective():
    host = Host(_config(every=10, minutes=0.0), total=25)
    assert _saves(host, 25) == [10, 20, 25]
    assert host.shared == 0


def test_time_based_saves_land_on_the_minute_with_a_few_broadcasts_per_interval():
    host = Host(_config(minutes=1.0), total=600, seconds_per_step=1.0)
    saves = _saves(host, 600)
    assert saves == [60, 120, 180, 240, 300, 360, 420, 480, 540, 600]
    assert host.shared <= 10 * 2 * 7  # O(log steps) per interval, not one per step


def test_a_step_time_that_changes_is_re_measured_before_the_target():
    host = Host(_config(minutes=1.0), total=10_000, seconds_per_step=0.1)
    times = []
    for step in range(1, 2000):
        if step == 100:
            host.seconds_per_step = 1.0  # the steps slow down 10x after 10 s
        if host.step(step):
            times.append(host.now)
    # One plan from the first steps' pace would save at step 600, after 510 s.
    assert 60.0 <= times[0] <= 90.0
    assert [round(b - a) for a, b in zip(times[:3], times[1:4], strict=True)] == [60, 60, 60]


def test_processes_with_different_clocks_save_at_the_same_steps():
    """Process 1's clock runs slow: it still saves exactly when process 0 decides."""
    plans = []
    config, total = _config(minutes=0.5), 400
    primary = Host(config, total, seconds_per_step=1.0, share=lambda v: plans.append(v) or v)
    other = Host(config, total, seconds_per_step=0.3, share=lambda v: plans.pop(0))
    steps = [[], []]
    for step in range(1, total + 1):  # in lockstep: each broadcast is met by the other side
        for index, host in enumerate((primary, other)):
            if host.step(step):
                steps[index].append(step)
    assert steps[0] == steps[1] == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330, 360,
                                    390, 400]  # fmt: skip
    assert primary.shared == other.shared and not plans


def test_a_resumed_run_plans_from_its_start_step():
    host = Host(_config(every=50, minutes=1.0), total=300, start=200, seconds_per_step=2.0)
    assert _saves(host, 300, start=200) == [230, 250, 280, 300]


@pytest.mark.parametrize("seconds_per_step", [120.0, 1e-12])
def test_extreme_step_times_still_give_valid_targets(seconds_per_step):
    host = Host(_config(minutes=1.0), total=50, seconds_per_step=seconds_per_step)
    saves = _saves(host, 50)
    assert saves[-1] == 50
    if seconds_per_step > 60:  # each step is longer than the interval: every step saves
        assert saves == list(range(1, 51))

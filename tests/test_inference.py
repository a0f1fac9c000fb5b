"""The inference ratio: a median of paired per-round ratios with its spread (10th to 90th
percentile), saved in results.json and shown to two decimals. No timing thresholds: the timing
logic runs on a simulated clock, and the real measurement is checked for its structure."""

import json
import random
from pathlib import Path

import pytest
from accelerate import Accelerator

from retain import inference
from retain.engine import run
from retain.summary import format_table


class Machine:
    """A simulated clock: every forward costs ``cost[name]`` times the machine's load (drawn
    between 1 and 8 for each round: a busy, shared machine), times 1.2 when it runs first in
    its round (a cold start), times noise of +-5%."""

    def __init__(self, cost: dict[str, float]):
        self.now, self.calls, self.cost, self.load = 0.0, 0, cost, 1.0
        self.draw = random.Random(0)

    def perf_counter(self) -> float:
        return self.now

    def forward(self, name: str):
        def run(batch):
            if self.calls % 2 == 0:
                self.load = self.draw.uniform(1, 8)
            first = 1.2 if self.calls % 2 == 0 else 1.0
            self.now += self.cost[name] * self.load * first * self.draw.uniform(0.95, 1.05)
            self.calls += 1
        return run


def measure(monkeypatch, cost: dict[str, float]) -> tuple[float, list[float], int]:
    machine = Machine(cost)
    monkeypatch.setattr(inference, "time", machine)
    seconds = inference.paired_seconds({n: machine.forward(n) for n in cost}, {},
                                       Accelerator(cpu=True))
    ratio, spread = inference.ratio_and_spread(seconds["deployed"], seconds["untouched"])
    return ratio, spread, len(seconds["deployed"])


def test_two_equal_models_read_one_within_the_spread(monkeypatch):
    """Equal models on a machine whose load swings 8-fold and where the first forward of a
    round is slower: the spread holds 1 and the median, and the load cancels in the pairs;
    a model twice as costly reads 2, and its spread leaves 1 out."""
    ratio, (low, high), rounds = measure(monkeypatch, {"deployed": 0.01, "untouched": 0.01})
    assert low <= ratio <= high and low <= 1 <= high and high / low < 1.6
    assert 30 <= rounds <= 100 and rounds % 2 == 0
    ratio, (low, high), _ = measure(monkeypatch, {"deployed": 0.02, "untouched": 0.01})
    assert low <= ratio <= high and not low <= 1 <= high and low <= 2 <= high


def test_rounds_stop_at_the_budget_after_the_minimum(monkeypatch):
    """Fast forwards run the most rounds; slow ones the fewest, however long they take."""
    assert measure(monkeypatch, {"deployed": 1e-4, "untouched": 1e-4})[2] == 100
    assert measure(monkeypatch, {"deployed": 1.0, "untouched": 1.0})[2] == 30


def test_the_profile_sets_the_rounds_and_their_budget(monkeypatch, tiny_config):
    """--inference-rounds N: at least N rounds, more while under N / 10 seconds; by default
    (no profile asks for a number) 2 to 30 rounds within 2% of the run; a resume may change
    it."""
    machine = Machine({"deployed": 0.02, "untouched": 0.02})
    monkeypatch.setattr(inference, "time", machine)

    class Untouched:
        def to(self, device):
            return self

        def eval(self):
            return self

    monkeypatch.setattr(inference, "deployed_forward",
                        lambda method, kind: (machine.forward("deployed"), "merged"))

    class Kind:
        def output(self, backbone, model):
            return machine.forward("untouched")

    class Method:
        backbone = None

        def eval(self):
            pass

    cost = inference.inference_cost(Method(), Untouched, {"x": [0] * 4}, Kind(),
                                    Accelerator(cpu=True), rounds=10)
    assert cost["inference_rounds"] == 10  # 10 rounds took more than 1 s
    # by default: 2 rounds at least, more while within 2% of the run before it
    cost = inference.inference_cost(Method(), Untouched, {"x": [0] * 4}, Kind(),
                                    Accelerator(cpu=True), rounds=None, run_seconds=0.0)
    assert cost["inference_rounds"] == 2
    cost = inference.inference_cost(Method(), Untouched, {"x": [0] * 4}, Kind(),
                                    Accelerator(cpu=True), rounds=None, run_seconds=1e6)
    assert cost["inference_rounds"] == inference.BUDGETED_ROUNDS
    assert tiny_config(method="seq-lora").resolved().inference_rounds is None  # the budget
    assert tiny_config(method="seq-lora", profile="quick").resolved().inference_rounds is None
    assert tiny_config(method="seq-lora", inference_rounds=4).resolved().inference_rounds == 4
    from retain.engine import EVALUATION_ONLY

    assert "inference_rounds" in EVALUATION_ONLY


def test_the_spread_ends_are_measured_ratios_around_the_median():
    ratio, spread = inference.ratio_and_spread(list(range(21, 0, -1)), [1] * 21)
    assert ratio == 11 and spread == [3, 19]
    ratio, spread = inference.ratio_and_spread([4, 1], [2, 2])
    assert ratio == 1.25 and spread == [0.5, 2]


def test_the_spread_is_saved_and_shown(tiny_config):
    """A run saves the ratio with its spread and rounds, and its summary shows both to two
    decimals."""
    cfg = tiny_config(method="frozen-ncm")
    run(cfg, progress=False)
    results = json.loads((Path(cfg.out) / "results.json").read_text())
    cost = results["cost"]
    low, high = cost["inference_ratio_spread"]
    assert low <= cost["inference_ratio"] <= high
    assert 2 <= cost["inference_rounds"] <= inference.BUDGETED_ROUNDS
    share = results["cost"]["inference_seconds"] / results["cost"]["wall_seconds"]
    assert cost["inference_rounds"] == 2 or share <= 0.03  # the budget, or its 2 rounds
    line = next(t for t in format_table(results).splitlines() if t.startswith("inference"))
    assert line.split()[-3:] == [f"{cost['inference_ratio']:.2f}", "(spread",
                                 f"{low:.2f}-{high:.2f})"]


@pytest.mark.parametrize("rounds", [(1, 5), (0, 0)])
def test_the_spread_needs_two_rounds(rounds):
    with pytest.raises(ValueError, match="two timed rounds"):
        inference.paired_seconds({}, {}, Accelerator(cpu=True), rounds=rounds)

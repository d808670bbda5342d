"""Per-step cost of the repetition controls (gptjax/repetition_controls.py) in the KV-cache decode.

Usage: python tools/bench_repetition_controls.py WORKDIR   (a chat checkpoint, e.g. runs/demo-sft)
Greedy decode of 16 chat prompts x 64 tokens, plain and with no_repeat_ngram_size=3 plus
repetition_penalty=1.2, compiled first, then 5 interleaved rounds; prints the median ms/step.
"""

import sys
import time

from gptjax.chat_template import render
from gptjax.generation import generate
from gptjax.inference.load import load_model

NAMES = ["json.dumps", "os.path.join", "len", "re.sub", "math.sqrt", "ast.parse", "io.open", "zip"]
SETTINGS = {"off": {}, "ngram3+pen1.2": dict(no_repeat_ngram_size=3, repetition_penalty=1.2)}


def main(workdir: str, rounds: int = 5, steps: int = 64) -> None:
    loaded = load_model(workdir)
    questions = [f"What does `{name}` do?" for name in NAMES] * 2
    prompts = [
        render(loaded.tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True)[0]
        for q in questions
    ]
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    with loaded.activated():
        for settings in SETTINGS.values():  # compile outside the timing
            generate(loaded.graphdef, loaded.params, prompts, max_new_tokens=steps, **settings)
        for _ in range(rounds):
            for name, settings in SETTINGS.items():
                start = time.perf_counter()
                generate(loaded.graphdef, loaded.params, prompts, max_new_tokens=steps, **settings)
                times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        median = sorted(values)[len(values) // 2]
        print(f"{name}: median {median / steps * 1e3:.2f} ms/step ({len(prompts)} rows)")


if __name__ == "__main__":
    main(sys.argv[1])

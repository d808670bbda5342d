"""`gptjax.load(WORKDIR)`: a trained checkpoint as a Python object that turns text into text.

    model = gptjax.load("runs/demo-sft")
    print(model.generate("What does `json.dumps` do?", max_new_tokens=48, temperature=0))

`generate` is `gptjax sample` as a function (gptjax.inference.complete does the work for
both): a chat checkpoint (sft/dpo) answers through its chat template (gptjax's, or an imported
Hugging Face model's own: gptjax.chat_format), a pretrained one continues the text, and the
same settings give the same text.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from flax import nnx

from gptjax.inference.complete import complete
from gptjax.inference.load import LoadedModel, load_model
from gptjax.paths import PathLike


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


class TrainedModel:
    """A loaded checkpoint: `.model` (a flax nnx Transformer), `.tokenizer`, `.phase`,
    `.step`, `.metadata` (the checkpoint's record of its config), and `generate`."""

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded

    tokenizer = property(lambda self: self.loaded.tokenizer)
    phase = property(lambda self: self.loaded.phase)
    step = property(lambda self: self.loaded.step)
    metadata = property(lambda self: self.loaded.metadata)
    config = property(lambda self: self.loaded.model_config)
    is_chat = property(lambda self: self.loaded.is_chat)

    @property
    def model(self):
        """The parameters as a `gptjax.Transformer` module (call it on token ids for logits)."""
        return nnx.merge(self.loaded.graphdef, self.loaded.params)

    def generate(
        self,
        prompts: str | Sequence[str],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int = 0,
        template: str = "auto",
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        log: Callable[[str], None] = _to_stderr,
    ) -> str | list[str]:
        """The completion of a prompt (a str), or of each of a list of prompts (a list).

        `template`: "auto" (chat for sft/dpo checkpoints, raw continuation otherwise),
        "chat" or "raw". `temperature=0` is greedy. A budget longer than the context the
        prompt leaves is capped, with one note to `log` (stderr by default).
        `repetition_penalty` (> 1 discourages tokens already in the text; 1 = off) and
        `no_repeat_ngram_size` (n: no n-gram occurs twice; 0 = off) as in Hugging Face.
        """
        single = isinstance(prompts, str)
        completions = complete(
            self.loaded,
            [prompts] if single else list(prompts),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            template=template,
            log=log,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return completions[0] if single else completions

    def __repr__(self) -> str:
        return f"<gptjax.TrainedModel {self.loaded.describe()}>"


def load(workdir: PathLike, step: int | None = None, *, mesh: dict | None = None) -> TrainedModel:
    """Checkpoint `step` (default: the latest) of `workdir` (or WORKDIR/checkpoints/STEP)."""
    return TrainedModel(load_model(workdir, step=step, mesh=mesh))

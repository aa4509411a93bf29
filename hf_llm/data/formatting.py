"""How an example becomes text: the Alpaca prompt, instruction prompts and preference pairs.

Training and evaluation both format examples through these functions, so what a model is evaluated on is what it
was trained on.

| function | used by |
|---|---|
| `ALPACA_CHAT_TEMPLATE`, `alpaca_messages`, `format_alpaca_prompt` | the chat template, SFT, `hf-llm chat` |
| `instruction_messages`, `instruction_prompt_and_reference` | SFT data, the `sft` evaluation (BLEU, perplexity) |
| `preference_conversation`, `preference_texts` | reward/DPO training data, the `reward` evaluation |
| `chat_prompt` | PPO prompts, the `win_rate` evaluation |

Preference pairs are rendered with the chat template the policy saw during SFT: a plain-text `prompt` becomes the
user's turn and each answer the assistant's (`preference_conversation`), so the reward model, DPO and PPO see prompts
exactly as the SFT model learned them, and the evaluation scores the texts the reward model was trained on.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hf_llm.errors import UsageError

from .errors import DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The book's Alpaca prompt (Raschka, "Build a Large Language Model (From Scratch)", ch. 7).
ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request."
)

# Renders messages as the Alpaca prompt: a system message replaces the preamble, each user turn becomes an
# `### Instruction:` section (an Alpaca `input` travels inside the user message under `### Input:`, see
# `alpaca_messages`), each assistant turn a `### Response:` section ended by eos. `{% generation %}` marks the
# assistant tokens for `return_assistant_tokens_mask` (TRL's `assistant_only_loss`).
ALPACA_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{{ messages[0]['content'] }}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{{ '" + ALPACA_PREAMBLE + "' }}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{ '\\n\\n### Instruction:\\n' + message['content'] }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '\\n\\n### Response:\\n' }}"
    "{%- generation -%}{{ message['content'] + eos_token }}{%- endgeneration -%}"
    "{%- else -%}"
    "{{ raise_exception('The Alpaca template supports system, user and assistant roles, not ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '\\n\\n### Response:\\n' }}{%- endif -%}"
)


def format_alpaca_prompt(instruction: str, input_text: str = "", response: str | None = None) -> str:
    """
    Format one example as the book's Alpaca prompt, exactly as `ALPACA_CHAT_TEMPLATE` renders it.

    Args:
        instruction (`str`): The task.
        input_text (`str`, defaults to `""`): Optional context; the `### Input:` section is left out when empty.
        response (`str`, *optional*): The answer; without it the prompt ends with `### Response:\\n`, ready for
            generation.
    """
    prompt = f"{ALPACA_PREAMBLE}\n\n### Instruction:\n{instruction}"
    if input_text:
        prompt += f"\n\n### Input:\n{input_text}"
    prompt += "\n\n### Response:\n"
    return prompt if response is None else prompt + response


def alpaca_messages(instruction: str, input_text: str = "", output: str | None = None) -> list[dict[str, str]]:
    """
    Turn an Alpaca `instruction`/`input`/`output` triple into chat messages for `ALPACA_CHAT_TEMPLATE`.

    `apply_chat_template(alpaca_messages(i, x), add_generation_prompt=True, tokenize=False)` equals
    `format_alpaca_prompt(i, x)`.
    """
    user = instruction + (f"\n\n### Input:\n{input_text}" if input_text else "")
    messages = [{"role": "user", "content": user}]
    if output is not None:
        messages.append({"role": "assistant", "content": output})
    return messages


def instruction_messages(example: dict) -> tuple[list[dict[str, str]], str]:
    """
    The prompt messages and the reference answer of one row of the `instruction` data format.

    Args:
        example (`dict`): A row with `messages` (the last one the assistant's answer), or Alpaca `instruction`,
            `input` (optional) and `output`.

    Returns:
        `tuple[list[dict], str]`: the messages before the answer, and the answer's text.
    """
    if example.get("messages"):
        return split_off_answer(example["messages"])
    return alpaca_messages(example["instruction"], example.get("input") or ""), example["output"]


def split_off_answer(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """
    A conversation of the `instruction` data format split into the messages before its answer and the answer.

    Args:
        messages (`list[dict]`): Chat messages (`role`, `content`), the last one the assistant's answer.

    Returns:
        `tuple[list[dict], str]`: the messages before the answer, and the answer's text.

    Raises:
        [`DataError`]: When the last message is not the assistant's.
    """
    messages = list(messages)
    if messages[-1]["role"] != "assistant":
        raise DataError(
            f"a 'messages' example ends with a {messages[-1]['role']!r} message; each conversation must end with "
            "the assistant's answer (the completion to train on and the reference to evaluate against)."
        )
    return messages[:-1], messages[-1]["content"]


def instruction_prompt_and_reference(example: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """The chat-formatted prompt (ending with the assistant turn's opening) and the reference answer."""
    if tokenizer.chat_template is None:
        raise UsageError(
            "the tokenizer has no chat template, so instruction prompts cannot be formatted; use a tokenizer from "
            "hf_llm.tokenizer.train_tokenizer (Alpaca template) or pass --tokenizer_name_or_path."
        )
    prompt_messages, reference = instruction_messages(example)
    prompt = tokenizer.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)
    return prompt, reference


# Anthropic HH-RLHF's dialogue strings: turns introduced by "\n\nHuman: " and "\n\nAssistant: ".
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def hh_dialogue_messages(text: str) -> list[dict] | None:
    """
    An Anthropic-HH-style dialogue string (`"\n\nHuman: ...\n\nAssistant: ..."`) as chat messages, or `None` when
    `text` is not one.
    """
    if not isinstance(text, str) or not text.startswith("\n\nHuman: "):
        return None
    parts = _HH_TURN.split(text)  # ["", "Human", "...", "Assistant", "...", ...]
    return [
        {"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _opening(messages: list[dict], width: int = 60) -> str:
    text = " / ".join(f"{m.get('role')}: {m.get('content')}" for m in messages)
    return repr(text[:width] + ("..." if len(text) > width else ""))


def split_conversation_pair(chosen: list[dict], rejected: list[dict]) -> dict:
    """
    Two conversations that share every turn but their last assistant turn, as `prompt` (the shared turns), `chosen`
    and `rejected` (the last turn of each).

    Raises:
        `ValueError`: When the conversations differ before their last turn (their prompts differ), or do not end with
            an assistant turn; the message shows both prompts' openings.
    """
    prompt_chosen, prompt_rejected = list(chosen[:-1]), list(rejected[:-1])
    if not chosen or not rejected or prompt_chosen != prompt_rejected or not prompt_chosen:
        raise UsageError(
            "chosen and rejected must be the same conversation up to their last (assistant) turn, but their prompts "
            f"differ: chosen opens {_opening(prompt_chosen)}, rejected opens {_opening(prompt_rejected)}"
        )
    if chosen[-1].get("role") != "assistant" or rejected[-1].get("role") != "assistant":
        raise UsageError(
            "chosen and rejected must each end with the assistant's answer, but one ends with a "
            f"{chosen[-1].get('role') if chosen[-1].get('role') != 'assistant' else rejected[-1].get('role')} turn"
        )
    return {"prompt": prompt_chosen, "chosen": [chosen[-1]], "rejected": [rejected[-1]]}


def preference_conversation(example: dict) -> dict:
    """
    One row of the `preference` data format with an explicit prompt, as the alignment stages train on it.

    - `prompt`, `chosen` and `rejected` strings: the prompt becomes the user's turn and each answer the assistant's,
      so the tokenizer's chat template renders them as SFT rendered its instructions (answers end with eos).
    - Conversations (lists of messages) with no `prompt`: the turns `chosen` and `rejected` share become the prompt,
      the last assistant turn of each the answers ([`split_conversation_pair`]). With a `prompt` of messages, the
      answers are the conversations as given.
    - Anthropic-HH dialogue strings (`"\n\nHuman: ...\n\nAssistant: ..."`) with no `prompt`: turned into messages,
      then split like conversations.
    - Other strings with no `prompt`: the longest shared prefix becomes the prompt and the texts are used as given;
      there is no separate user turn to render.

    Returns:
        `dict`: `prompt`, `chosen` and `rejected`, either all messages or all strings.

    Raises:
        `ValueError`: When conversations (or HH dialogues) differ before their last turn.
    """
    from trl.data_utils import maybe_extract_prompt

    prompt, chosen, rejected = example.get("prompt"), example["chosen"], example["rejected"]
    if isinstance(prompt, str) and isinstance(chosen, str):
        return {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
    if prompt is None:
        chosen_turns, rejected_turns = hh_dialogue_messages(chosen), hh_dialogue_messages(rejected)
        if chosen_turns is not None and rejected_turns is not None:
            return split_conversation_pair(chosen_turns, rejected_turns)
        if isinstance(chosen, list) and isinstance(rejected, list):
            return split_conversation_pair(list(chosen), list(rejected))
    pair = {"chosen": chosen, "rejected": rejected} if prompt is None else {"prompt": prompt, **example}
    pair = maybe_extract_prompt(pair)
    return {"prompt": pair["prompt"], "chosen": pair["chosen"], "rejected": pair["rejected"]}


def chat_prompt(example: dict, tokenizer: PreTrainedTokenizerBase) -> str:
    """
    The prompt of an `instruction` or `preference` row as the policy sees it: rendered with the chat template and
    ending with the assistant turn's opening, ready for generation (a string prompt with no template is as given).
    """
    if "chosen" not in example:
        return instruction_prompt_and_reference(example, tokenizer)[0]
    prompt = preference_conversation(example)["prompt"]
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def preference_texts(example: dict, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """`prompt + chosen` and `prompt + rejected` as the reward model saw them in TRL's `RewardTrainer`, after
    [`preference_conversation`] (a plain-text prompt is rendered as the user's turn of the chat template)."""
    if tokenizer.chat_template is not None:
        example = preference_conversation(example)
    prompt, chosen, rejected = example.get("prompt"), example["chosen"], example["rejected"]
    if isinstance(chosen, str):
        # RewardTrainer appends EOS to plain-text completions and prepends the prompt.
        prefix = prompt or ""
        return tuple(
            prefix + text + ("" if text.endswith(tokenizer.eos_token) else tokenizer.eos_token)
            for text in (chosen, rejected)
        )
    prompt_messages = list(prompt or [])
    return tuple(
        tokenizer.apply_chat_template(prompt_messages + list(messages), tokenize=False)
        for messages in (chosen, rejected)
    )

"""The Gradio pages: rank sampled answers, and chat with a checkpoint.

Everything a model wrote (and every prompt) reaches the page as text, never as live HTML: ranking shows it in
read-only text boxes (a `<textarea>` renders no markup), and the chat escapes it before the chatbot sees it and turns
Markdown off, so a generated `<script>` or `<img onerror>` is shown, not run.
"""

from __future__ import annotations

import html
import os
import string

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a labeling tool

import gradio as gr  # noqa: E402
from transformers import PreTrainedModel, PreTrainedTokenizerBase  # noqa: E402

from .sampling import SamplingConfig, stream_reply  # noqa: E402
from .session import RankingSession  # noqa: E402

#: Keeps the model's line breaks and indentation in the chat (its text is escaped, so no markup is rendered).
CSS = ".hf-llm-text .md, .hf-llm-text .message-content { white-space: pre-wrap; }"


def answer_label(index: int) -> str:
    return string.ascii_uppercase[index] if index < 26 else str(index + 1)


def _text(value: str) -> str:
    """Our own messages go into Markdown components: escape anything that came from a user, a file or a model."""
    return html.escape(value, quote=False)


def build_ranking_tab(app: gr.Blocks, session: RankingSession, num_answers: int) -> None:
    """The ranking page, inside the current `gr.Blocks`: progress, the prompt, the answers side by side with a rank
    choice under each, and Submit / Tie / All bad / Skip. API endpoints (for `gradio_client`): `/current`,
    `/submit` (prompt id, then one rank per answer; `None` for a blank), `/tie`, `/all_bad`, `/skip` (prompt id)."""
    progress = gr.Markdown()
    shown_prompt_id = gr.Textbox(visible=False, label="prompt id")
    prompt = gr.Textbox(label="Prompt", interactive=False, lines=2, max_lines=12)
    answers, ranks = [], []
    with gr.Row(equal_height=True):
        for index in range(num_answers):
            with gr.Column(min_width=240):
                label = answer_label(index)
                answers.append(gr.Textbox(label=f"Answer {label}", interactive=False, lines=8, max_lines=40))
                ranks.append(
                    gr.Radio(
                        choices=list(range(1, num_answers + 1)),
                        label=f"Rank of {label} (1 = best)",
                        value=None,
                    )
                )
    gr.Markdown(
        "Rank every answer (equal ranks are ties), or pick only the best (1) and the worst "
        f"({num_answers}) and leave the rest blank. Each submission is saved at once; closing the page or stopping "
        "the server loses nothing that was submitted."
    )
    with gr.Row():
        submit = gr.Button("Submit ranking", variant="primary")
        tie = gr.Button("Tie: all equally good")
        all_bad = gr.Button("All bad")
        skip = gr.Button("Skip")
    status = gr.Markdown()
    outputs = [progress, shown_prompt_id, prompt, *answers, *ranks, status]

    def view(message: str = "") -> tuple:
        counts = session.progress()
        line = f"**{counts['ranked']} / {counts['total']} ranked**"
        if counts["skipped"]:
            line += f", {counts['skipped']} skipped"
        line += f" · labeler `{_text(session.labeler)}` · rankings file `{_text(str(session.output_file))}`"
        item = session.current()
        if item is None:
            done = (
                f"All {counts['total']} prompts answered. Export the pairs with `hf-llm rank --export DIR "
                f"--output_file {_text(str(session.output_file))}`."
            )
            return (line, "", "", *[""] * num_answers, *[None] * num_answers, done)
        return (line, item.prompt_id, item.prompt, *item.answers, *[None] * num_answers, _text(message))

    def act(action, pid: str, *rank_values) -> tuple:
        try:
            action(pid, *rank_values)
        except ValueError as error:
            # Say what to change; keep the labeler's choices if the same prompt is still on the page.
            kept = view(f"Not saved: {error}")
            same_prompt = kept[1] == pid
            return (*kept[: 3 + num_answers], *rank_values, kept[-1]) if rank_values and same_prompt else kept
        return view("Saved.")

    def on_submit(pid: str, *rank_values):
        return act(
            lambda p, *r: session.submit(p, [None if v in (None, "") else int(v) for v in r]), pid, *rank_values
        )

    app.load(view, outputs=outputs, api_name="current")
    submit.click(on_submit, inputs=[shown_prompt_id, *ranks], outputs=outputs, api_name="submit")
    tie.click(lambda pid: act(session.tie, pid), inputs=shown_prompt_id, outputs=outputs, api_name="tie")
    all_bad.click(lambda pid: act(session.all_bad, pid), inputs=shown_prompt_id, outputs=outputs, api_name="all_bad")
    skip.click(lambda pid: act(session.skip, pid), inputs=shown_prompt_id, outputs=outputs, api_name="skip")


def build_chat_tab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, defaults: SamplingConfig) -> None:
    """The chat page, inside the current `gr.Blocks`: a streaming chat through the tokenizer's chat template, with
    the sampling settings as controls. API endpoint: `/chat` (message, temperature, top_p, top_k, max_new_tokens,
    repetition_penalty); the conversation is kept per browser session."""
    chatbot = gr.Chatbot(
        label="Chat",
        height=420,
        render_markdown=False,
        sanitize_html=True,
        latex_delimiters=[],
        allow_tags=False,
        feedback_options=None,
        elem_classes=["hf-llm-text"],
    )
    conversation = gr.State([])  # the raw messages the model sees; the chatbot holds their escaped display form
    message = gr.Textbox(label="Message", placeholder="Type an instruction and press Enter", lines=2)
    with gr.Row():
        send = gr.Button("Send", variant="primary")
        clear = gr.Button("Clear")
    with gr.Accordion("Sampling", open=False):
        temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="top_p")
        top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="top_k (0 = off)")
        # No answer can be longer than the context minus the chat template's own tokens.
        longest = max(1, (getattr(model.config, "max_position_embeddings", None) or 2049) - 1)
        max_new_tokens = gr.Slider(
            1, longest, value=min(defaults.max_new_tokens, longest), step=1, label="max_new_tokens"
        )
        repetition_penalty = gr.Slider(
            1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="repetition_penalty"
        )

    def shown(messages: list[dict]) -> list[dict]:
        return [{"role": m["role"], "content": html.escape(m["content"])} for m in messages]

    def respond(text: str, history: list[dict], temp, nucleus, k, new_tokens, penalty):
        if not text.strip():
            yield "", shown(history), history
            return
        config = SamplingConfig(
            num_samples=1,
            max_new_tokens=int(new_tokens),
            temperature=float(temp),
            top_p=float(nucleus),
            top_k=int(k),
            repetition_penalty=float(penalty),
        )
        messages = [*history, {"role": "user", "content": text}]
        reply = ""
        yield "", shown([*messages, {"role": "assistant", "content": reply}]), history
        try:
            for reply in stream_reply(model, tokenizer, messages, config):
                yield "", shown([*messages, {"role": "assistant", "content": reply}]), history
        except ValueError as error:  # the message alone fills the model's context
            raise gr.Error(html.escape(str(error))) from None
        messages.append({"role": "assistant", "content": reply})
        yield "", shown(messages), messages

    inputs = [message, conversation, temperature, top_p, top_k, max_new_tokens, repetition_penalty]
    outputs = [message, chatbot, conversation]
    send.click(respond, inputs=inputs, outputs=outputs, api_name="chat")
    message.submit(respond, inputs=inputs, outputs=outputs, api_name=False)
    clear.click(lambda: ([], []), outputs=[chatbot, conversation], api_name="clear")


def build_ranking_app(
    session: RankingSession,
    num_answers: int,
    chat: tuple[PreTrainedModel, PreTrainedTokenizerBase, SamplingConfig] | None = None,
) -> gr.Blocks:
    """The `hf-llm rank` app: a "Rank" tab and, when `chat` is given, a "Chat" tab talking to the same model."""
    with gr.Blocks(title="hf_llm · rank answers", analytics_enabled=False) as app:
        gr.Markdown(f"# Rank the answers · `{_text(str(session.metadata.get('model_name_or_path')))}`")
        with gr.Tab("Rank"):
            build_ranking_tab(app, session, num_answers)
        if chat is not None:
            with gr.Tab("Chat"):
                build_chat_tab(*chat)
    return app


def build_chat_app(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, defaults: SamplingConfig, model_name: str
) -> gr.Blocks:
    """The `hf-llm chat --web` app."""
    with gr.Blocks(title="hf_llm · chat", analytics_enabled=False) as app:
        gr.Markdown(f"# Chat · `{_text(model_name)}`")
        build_chat_tab(model, tokenizer, defaults)
    return app

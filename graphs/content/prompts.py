"""Prompts for the content workflow, and the cleanup of what the model writes.

The local tier is a 270M *base* model: it follows documents, not instructions. Every prompt is
therefore a few-shot document built from the persona's own example posts that ends exactly where
the wanted text begins; an instruction-tuned premium model continues the same document just as
well. The hook is the post's opening line; the body continues the post from the hook.
"""

from __future__ import annotations

import re

from chorus.persona import PersonaSpec

SEPARATOR = "###"
# Where a base model starts the next example or wanders off after the post.
# Posts are one paragraph: a small model that starts a new line is starting a list or the next
# document, not improving this post.
STOP = (SEPARATOR, "\nTopic:", "\nPost:", "\n")
# Labels of the few-shot document; a small model sometimes writes them mid-line.
_LABELS = ("Topic:", "Post:")

# A full stop after a digit is a list number ("1."), not the end of a sentence.
_SENTENCE_END = re.compile(r"(?<=[^\d\s])[.!?…](?=\s|$)")


def _header(persona: PersonaSpec) -> str:
    platforms = ", ".join(p.name.value for p in persona.platforms)
    return (
        f"Social media posts by {persona.display_name} on {platforms}.\n"
        f"Voice: {persona.voice.strip()}\n"
        f"Tone: {', '.join(persona.tone)}. Audience: {persona.audience}.\n"
        f"Every post is under {persona.max_chars} characters."
    )


def _examples(persona: PersonaSpec) -> str:
    return "\n".join(f"Post: {post.strip()}\n{SEPARATOR}" for post in persona.example_posts)


def few_shot_document(persona: PersonaSpec, topic: str, post_start: str = "") -> str:
    examples = _examples(persona)
    start = f" {post_start.strip()}" if post_start else ""
    return f"{_header(persona)}\n\n{examples}\nTopic: {topic}\nPost:{start}"


def hook_messages(persona: PersonaSpec, topic: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": few_shot_document(persona, topic)}]


def body_messages(persona: PersonaSpec, topic: str, hook: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": few_shot_document(persona, topic, hook)}]


def rewrite_messages(persona: PersonaSpec, topic: str, problems: list[str]) -> list[dict[str, str]]:
    """A fresh post on the same topic, told what the rejected draft got wrong.

    The draft itself is not shown: small models copy what they see. The notes sit in the
    header, where a base model reads them as a description of the posts
    that follow, and an instruction model as the brief.
    """
    notes = "; ".join(problems)
    brief = f"{_header(persona)}\nEditor's note on a rejected draft ({notes}): the posts below avoid that."
    examples = _examples(persona)
    return [{"role": "user", "content": f"{brief}\n\n{examples}\nTopic: {topic}\nPost:"}]


def revision_messages(persona: PersonaSpec, topic: str, feedback: str) -> list[dict[str, str]]:
    """A new post on the same topic, written to a reviewer's request for changes. Like a rewrite,
    the sent-back draft is not shown (small models copy it); the request is the brief."""
    request = feedback.strip().rstrip(".")
    brief = f"{_header(persona)}\nThe editor asked for a new version: {request}. The posts below do that."
    return [{"role": "user", "content": f"{brief}\n\n{_examples(persona)}\nTopic: {topic}\nPost:"}]


def first_line(text: str) -> str:
    """The hook: the first non-empty line of what the model wrote, cut at its first sentence."""
    for line in clean_post(text).splitlines():
        line = line.strip()
        if line:
            match = _SENTENCE_END.search(line)
            return line[: match.end()] if match else line
    return ""


def clean_post(text: str) -> str:
    """Strip what a base model adds around a post: the next example, labels, stray quotes."""
    for marker in (*STOP, *_LABELS):
        cut = text.find(marker, 1)
        if cut != -1:
            text = text[:cut]
    paragraphs = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    text = paragraphs[0] if paragraphs else ""
    for label in _LABELS:  # a label at the very start is the model restating the document
        text = text.strip().removeprefix(label)
    text = text.strip().lstrip("*-•> ").strip('"“”').strip()
    return re.sub(r"[ \t]+", " ", text)


def fit_to_length(text: str, limit: int) -> str:
    """Cut an overlong post at its last whole sentence within the limit, if that keeps most of it.

    A model often finishes the post and then keeps going; cutting there is stripping the extra,
    not mangling the post. A post with no sentence break late enough is left for review to reject.
    """
    if len(text) <= limit:
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if m.end() <= limit]
    if ends and ends[-1] >= limit * 0.4:
        return text[: ends[-1]].strip()
    return text


def with_required_hashtags(text: str, required: list[str], limit: int) -> str:
    """Append the persona's required hashtags the model left out, when they fit.

    Required elements are rules, not style: enforcing them here is free and exact, where asking a
    small model to remember them costs a rewrite. A post they do not fit is left for review.
    """
    present = {t.lower() for t in re.findall(r"(?<!\w)#\w+", text)}
    missing = [t for t in required if t.lower() not in present]
    if not missing:
        return text
    extended = f"{text.rstrip()} {' '.join(missing)}"
    return extended if len(extended) <= limit else text

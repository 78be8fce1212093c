"""The data side of drafter training: chat data -> regenerated answers -> token ids + loss mask -> draft vocabulary.

Nothing here imports SGLang; regeneration talks to any OpenAI-compatible server.
"""

from sglang_edsd.data.chat import (
    Conversation,
    DataError,
    build_token_dataset,
    load_conversations,
    normalise_messages,
    read_token_dataset,
    tokenize_conversation,
)
from sglang_edsd.data.regenerate import regenerate
from sglang_edsd.data.vocab import (
    count_loss_tokens,
    draft_vocab_maps,
    select_draft_vocab,
    vocab_coverage,
)

__all__ = [
    "Conversation",
    "DataError",
    "build_token_dataset",
    "count_loss_tokens",
    "draft_vocab_maps",
    "load_conversations",
    "normalise_messages",
    "read_token_dataset",
    "regenerate",
    "select_draft_vocab",
    "tokenize_conversation",
    "vocab_coverage",
]

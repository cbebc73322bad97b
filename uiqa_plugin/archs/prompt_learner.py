"""Learned prompt context (CoOp), as CLIP-IQA+ trains it: 16 vectors, N(0, 0.02), one per antonym pair.

Each prompt becomes ``[SOS] <context> <class words> [EOT] pad`` in token-embedding space,
the context vectors trainable, everything else CLIP's frozen token embeddings. The class
position can be ``front`` ([SOS] class ctx ...), ``middle`` ([SOS] ctx[:n/2] class
ctx[n/2:] ...) or ``end`` ([SOS] ctx class ...). The placeholder text follows the
reference, ``'X X ... X ' + prompt + '.'``, so 'Good photo.' gives the class segment
'good photo ..'; all lengths and the EOT index are read from the tokenizer.
"""
import torch
import torch.nn as nn

from uiqa_plugin.archs.shared_clip import SharedClipMixin

POSITIONS = ('front', 'middle', 'end')


def class_token_count(clip, text):
    """Number of BPE tokens of ``text`` alone (between SOS and EOT)."""
    tokens = clip.tokenize([text])[0]
    return int(tokens.argmax()) - 1  # EOT has the largest id of the vocabulary


class PromptLearner(SharedClipMixin, nn.Module):
    """Trainable context for a list of antonym pairs.

    Args:
        clip: the shared ClipBackbone (only its tokenizer and token embedding are used here).
        pairs: K (positive, negative) prompts; features come out as pos0, neg0, pos1, ...
        n_ctx: context length (ignored when ``ctx_init`` is given: its token count is used).
        ctx_init: optional phrase whose token embeddings initialise the context.
        class_token_position: 'front' | 'middle' | 'end'.
        context: 'pair' (one context shared by both prompts of a pair, the reference) or
            'prompt' (one per prompt, CoOp's class-specific context).
        init_std: std of the random initialisation.

    forward() -> (2K, D) unit-norm text features, differentiable w.r.t. the context only.
    """

    def __init__(self, clip, pairs, n_ctx=16, ctx_init=None, class_token_position='middle', context='pair',
                 init_std=0.02):
        super().__init__()
        if class_token_position not in POSITIONS:
            raise ValueError(f'class_token_position must be one of {POSITIONS}, got {class_token_position!r}')
        if context not in ('pair', 'prompt'):
            raise ValueError(f"context must be 'pair' or 'prompt', got {context!r}")
        prompts = [p for pair in pairs for p in pair]
        num_ctx_sets = len(pairs) if context == 'pair' else len(prompts)
        with torch.no_grad():
            if ctx_init:
                n_ctx = class_token_count(clip, ctx_init)
                init_tokens = clip.tokenize([ctx_init])
                init = clip.token_embedding(init_tokens)[0, 1:1 + n_ctx]
                ctx = init.unsqueeze(0).repeat(num_ctx_sets, 1, 1).float()
            else:
                ctx = torch.randn(num_ctx_sets, n_ctx, clip.text_width) * init_std
        if n_ctx < 1:
            raise ValueError('n_ctx must be at least 1')
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.position = class_token_position
        self.context = context
        self.prompts = tuple(prompts)

        placeholder = ' '.join(['X'] * n_ctx)
        tokens = clip.tokenize([f'{placeholder} {p}.' for p in prompts])
        if (tokens.argmax(dim=-1) >= tokens.shape[1] - 1).any():
            raise ValueError(f'prompts too long for a context of {n_ctx} tokens in {tokens.shape[1]} positions')
        self.name_lens = [class_token_count(clip, p) for p in prompts]
        with torch.no_grad():
            embedding = clip.token_embedding(tokens)
        # CLIP-derived constants: buffers so they follow .to(), non-persistent so checkpoints stay small.
        self.register_buffer('token_ids', tokens, persistent=False)
        self.register_buffer('token_prefix', embedding[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer('token_suffix', embedding[:, 1 + n_ctx:].clone(), persistent=False)  # class, '.', EOT
        self.register_buffer('eot_index', tokens.argmax(dim=-1), persistent=False)
        self._attach_clip(clip)

    def _ctx_per_prompt(self):
        ctx = self.ctx
        if self.context == 'pair':
            ctx = ctx.repeat_interleave(2, dim=0)
        return ctx.to(self.token_prefix.dtype)

    def prompt_embeddings(self):
        """(2K, L, width) input embeddings with the context placed at the class position."""
        ctx = self._ctx_per_prompt()
        if self.position == 'end':
            return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, name_len in enumerate(self.name_lens):
            prefix, suffix, c = self.token_prefix[i:i + 1], self.token_suffix[i:i + 1], ctx[i:i + 1]
            name, rest = suffix[:, :name_len], suffix[:, name_len:]
            if self.position == 'front':
                rows.append(torch.cat([prefix, name, c, rest], dim=1))
            else:
                rows.append(torch.cat([prefix, c[:, :half], name, c[:, half:], rest], dim=1))
        return torch.cat(rows, dim=0)

    def token_layout(self):
        """For inspection and tests: per prompt, a list of 'SOS' / 'CTX' / token-id / 'EOT' / 'PAD' entries."""
        layouts = []
        for i, name_len in enumerate(self.name_lens):
            ids = self.token_ids[i].tolist()
            eot = int(self.eot_index[i])
            name = ids[1 + self.n_ctx:1 + self.n_ctx + name_len]
            rest = ids[1 + self.n_ctx + name_len:eot]
            ctx = ['CTX'] * self.n_ctx
            half = self.n_ctx // 2
            body = {'front': name + ctx, 'middle': ctx[:half] + name + ctx[half:], 'end': ctx + name}[self.position]
            layouts.append(['SOS'] + body + rest + ['EOT'] + ['PAD'] * (len(ids) - eot - 1))
        return layouts

    def forward(self, precision='fp32'):
        return self.clip.encode_text_embeddings(self.prompt_embeddings(), self.eot_index, precision)

"""A deterministic multilingual test corpus for the tokenizer oracle tests (>= 1 MB of lines).

Mixes Latin with accents, Cyrillic, Greek, CJK, Arabic, Hindi, code, emoji (incl. ZWJ sequences),
numbers, whitespace runs, tabs/newlines, control characters, U+FFFD, lone combining marks,
decomposed letters (for NFC/NFKC) and special-token strings."""
import random

WORDS = {
    "latin": "the quick brown fox jumps over lazy dog café naïve résumé Straße Ångström façade jalapeño "
             "don't we'll they're I'M it's You'VE HE'D crème brûlée coöperate Œuvre ÉCOLE İstanbul".split(),
    "cyrillic": "Привет мир съешь же ещё этих мягких французских булок да выпей чаю Москва ЁЖИК".split(),
    "greek": "Γειά σου κόσμε ξεσκεπάζω την ψυχοφθόρα βδελυγμία ΣΊΣΥΦΟΣ ὅτι ᾠδή".split(),
    "cjk": "你好世界 東京都 中华人民共和国 日本語のテキスト です。 한국어 문장입니다 漢字かなカナ".split(),
    "arabic": "مرحبا بالعالم اللغة العربية جميلة ١٢٣ ٤٥٦".split(),
    "hindi": "नमस्ते दुनिया हिन्दी भाषा क्षत्रिय ज्ञान १२३".split(),
    "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🇫🇷", "🤷‍♀️", "🧑🏿‍💻", "✨✨", "🐍"],
    "symbols": ["©", "®", "™", "€100", "£5", "¥", "½", "①", "ﬁ", "Ⅻ", "km²", "x³", "—", "…", "«»", "„“", "‹›",
                "\u00a0", "\u2009", "\u3000", "\u200b", "\u2028", "\ufeff", "\ufffd", "\u0301", "\u0308a",
                "e\u0301", "A\u030a", "\u1100\u1161", "ǅ", "ß", "ẞ", "ﬀ", "Ω", "Å"],
    "controls": ["\x00", "\x01", "\x07", "\x1b[0m", "\x7f", "\x85", "\x0b", "\x0c", "\r\n", "\r"],
}

CODE = [
    "def f(x):\n    return x**2 + 1  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "const re = /^[a-z0-9_\\-]+$/i; console.log(`value: ${x}`);",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name DESC;",
    "<div class=\"main\"><p>Hello &amp; welcome</p></div>",
    "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"a\": \"b\"}}",
    "    if err != nil {\n\t\treturn nil, fmt.Errorf(\"failed: %w\", err)\n\t}",
    "#include <vector>\nint main() { std::vector<int> v{1,2,3}; }\n",
    "$ ls -la /usr/local/bin | grep -E '\\.so$' && echo done",
]

SPECIALS = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|im_start|>", "<|im_end|>",
            "[INST]", "<0x41>", "<pad>"]


def _number(rng):
    k = rng.randrange(6)
    if k == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 15)))
    if k == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randrange(0, 6)}f}"
    if k == 2:
        return f"{rng.randrange(1, 32)}/{rng.randrange(1, 13)}/{rng.randrange(1900, 2100)}"
    if k == 3:
        return f"{rng.randrange(100000):,}"
    if k == 4:
        return f"0x{rng.randrange(1 << 32):08X}"
    return f"{rng.random():e}"


def _space(rng):
    return rng.choice([" ", " ", " ", "  ", "   ", "\t", "\n", "\n\n", " \n ", "\t\t", "    ", " \r\n"])


def make_lines(seed=1234, min_bytes=1_100_000):
    """Lines (each a str, may contain newlines) totalling at least min_bytes UTF-8 bytes."""
    rng = random.Random(seed)
    groups = list(WORDS)
    lines, total = [], 0
    while total < min_bytes:
        parts = []
        mode = rng.randrange(10)
        n = rng.randrange(1, 40)
        for _ in range(n):
            r = rng.random()
            if mode == 0 and r < 0.5:
                parts.append(rng.choice(CODE))
            elif r < 0.06:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.14:
                parts.append(_number(rng))
            elif r < 0.2:
                parts.append(rng.choice(WORDS["symbols"]))
            elif r < 0.23:
                parts.append(rng.choice(WORDS["controls"]))
            elif r < 0.3:
                parts.append(rng.choice(WORDS["emoji"]))
            else:
                g = groups[0] if mode in (1, 2, 3) else rng.choice(groups[:6])
                w = rng.choice(WORDS[g])
                if rng.random() < 0.1:
                    w = w.upper()
                elif rng.random() < 0.1:
                    w = w.capitalize()
                parts.append(w)
            if rng.random() < 0.85:
                parts.append(" " if rng.random() < 0.8 else _space(rng))
            if rng.random() < 0.05:
                parts.append(rng.choice(".,;:!?()[]{}'\"-"))
        line = "".join(parts)
        if rng.random() < 0.1:
            line = _space(rng) + line
        if rng.random() < 0.1:
            line = line + _space(rng)
        lines.append(line)
        total += len(line.encode("utf-8"))
    lines += ["", " ", "  ", "\n", "a", "<|endoftext|>", "<|endoftext|><|endoftext|>", " <|endoftext|> ",
              "\ufffd", "\u0301", "\u0301\u0301x", "😀" * 5, "x" * 3000, " " * 100, "\t\n\r\x0b\x0c"]
    return lines

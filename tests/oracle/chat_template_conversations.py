"""Conversations for the chat-template oracle."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
        "return": {"type": "number", "description": "The temperature"},
    },
}

SYSTEM = {"role": "system", "content": "You are a concise assistant. Réponds en français si besoin 🙂."}

PLAIN = {
    "single_user": [{"role": "user", "content": "Hello! How are you?"}],
    "system_user": [SYSTEM, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [
        {"role": "user", "content": "  Hi there  "},
        {"role": "assistant", "content": "Hello! How can I help?\n"},
        {"role": "user", "content": "Tell me a joke about \"quotes\" and 'apostrophes'."},
        {"role": "assistant", "content": "Why did the string escape? It had a backslash \\ 🤖"},
        {"role": "user", "content": "Another one, in 日本語 please.\n\nThanks"},
    ],
    "system_multi_turn": [
        SYSTEM,
        {"role": "user", "content": "First question"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "Second question\twith a tab"},
    ],
}

TOOL_CALL = [
    {"role": "user", "content": "What's the weather like in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [{
        "id": "call12345", "type": "function",
        "function": {"name": "get_current_weather", "arguments": {"location": "Paris, France", "unit": "celsius"}},
    }]},
    {"role": "tool", "tool_call_id": "call12345", "name": "get_current_weather", "content": "22.5"},
    {"role": "assistant", "content": "It is 22.5 °C in Paris."},
    {"role": "user", "content": "And in Tokyo?"},
]

# Reasoning: as a field (reasoning_content / the older "reasoning" name) and inline <think> blocks (Qwen3-style).
REASONING = [
    {"role": "system", "content": "Think first."},
    {"role": "user", "content": "What is 6*7?"},
    {"role": "assistant", "content": "<think>\n6*7 is 42.\n</think>\n\n42"},
    {"role": "user", "content": "And 6*8?"},
    {"role": "assistant", "content": "48", "reasoning": "6*8 = 48"},
]

# Multimodal-style content parts (Gemma 3 reads them).
CONTENT_PARTS = [
    {"role": "system", "content": [{"type": "text", "text": "Describe images briefly."}]},
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  What is this?  "}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    {"role": "user", "content": "Thanks"},
]

"""Conversations that exercise every branch of the Qwen3 chat template (shared by several tests)."""

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

CONVERSATIONS = {
    "single_user": [{"role": "user", "content": "What is 2+2?"}],
    "system_user": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a prime."},
    ],
    "think_flag": [{"role": "user", "content": "Solve 17*23 /think"}],
    "no_think_flag": [{"role": "user", "content": "Say hi /no_think"}],
    "assistant_reasoning_content": [
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "5", "reasoning_content": "\n2 plus 3 is 5.\n"},
    ],
    "assistant_inline_think": [
        {"role": "user", "content": "2+3?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\nIt is 5."},
    ],
    "assistant_empty_think": [
        {"role": "user", "content": "hello /no_think"},
        {"role": "assistant", "content": "Hi!", "reasoning_content": ""},
    ],
    "multi_turn_strips_old_reasoning": [
        {"role": "user", "content": "1+1? /think"},
        {"role": "assistant", "content": "2", "reasoning_content": "one and one"},
        {"role": "user", "content": "and 2+2? /no_think"},
        {"role": "assistant", "content": "4", "reasoning_content": ""},
        {"role": "user", "content": "and 3+3? /think"},
    ],
    "multi_turn_flags_last_wins": [
        {"role": "system", "content": "Be helpful. /no_think"},
        {"role": "user", "content": "first /think"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nok"},
        {"role": "user", "content": "second /no_think then /think"},
    ],
    "mid_system_message": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "system", "content": "Switch to French."},
        {"role": "user", "content": "bonjour"},
    ],
    "tool_call_and_response": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "I should call the tool.",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "It is 21 degrees.", "reasoning_content": "Tool says 21."},
    ],
    "two_tool_calls_two_responses": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}},
            ],
        },
        {"role": "tool", "content": "21"},
        {"role": "tool", "content": "25"},
    ],
    "unicode_and_newlines": [
        {"role": "user", "content": "Übersetze: 你好\n\nDanke"},
        {
            "role": "assistant",
            "content": "\n\nHallo",
            "reasoning_content": "\n\nChinese greeting\n\n",
        },
    ],
}

# Conversations rendered with tools=[WEATHER_TOOL].
WITH_TOOLS = {"tool_call_and_response", "two_tool_calls_two_responses"}

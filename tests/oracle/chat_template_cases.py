"""Small templates, one Jinja construct each, rendered with CONVERSATION (and tools, add_generation_prompt=True,
bos_token, eos_token) by transformers and by us."""

CONVERSATION = [
    {"role": "system", "content": "  Sys prompt\nline two  "},
    {"role": "user", "content": "Hello, World! ça va? 🙂"},
    {"role": "assistant", "content": "Fine.", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": {"b": 2, "a": [1, 2.5, None, True], "c": "x\"y"}}}]},
    {"role": "tool", "content": "{\"ok\": 1}"},
    {"role": "user", "content": "The end", "extra": None, "score": 3, "ratio": 0.1},
]

CASES = [
    ("text_only", "plain text\n"),
    ("trim_lstrip_blocks", "a\n  {% if true %}\n    b\n  {% endif %}\nc\n{# comment #}\nd  {% if true %}e{% endif %}\n"),
    ("whitespace_control", "x   {{- ' y ' -}}   z\n{%- if true -%}\n  w  \n{%- endif %}  \n{%+ if true %}k{% endif +%}\nend"),
    ("raw", "{% raw %}{{ not a var }}{% endraw %}|{%- raw -%}  {% x %}  {%- endraw %}"),
    ("comment_strip", "a  {#- c -#}  b\n  {# c2 #}\nd"),
    ("for_loop_vars", "{% for m in messages %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/"
                      "{{ loop.revindex0 }}/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}"),
    ("for_else", "{% for x in [] %}no{% else %}empty{% endfor %}{% for x in messages if x.role == 'nobody' %}a"
                 "{% else %}none{% endfor %}"),
    ("for_filter_if", "{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}{{ loop.last }},"
                      "{% endfor %}"),
    ("for_unpack_items", "{% for k, v in messages[2].tool_calls[0].function.arguments.items() %}{{ k }}={{ v }};"
                         "{% endfor %}{% for k, v in messages[1] | items %}{{ k }}:{{ v }}|{% endfor %}"),
    ("for_dict_keys", "{% for k in messages[4] %}{{ k }},{% endfor %}{{ messages[4].keys() | list }}"
                      "{{ messages[4].values() | list }}"),
    ("nested_loops", "{% for a in [1, 2] %}{% for b in 'xy' %}{{ loop.index }}{{ a }}{{ b }}{% endfor %}"
                     "{{ loop.index }} {% endfor %}"),
    ("break_continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 5 %}{% break %}"
                       "{% endif %}{{ i }}{% endfor %}"),
    ("set_scoping", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}"
                    "{% if true %}{% set y = 5 %}{% endif %}{{ y }}"),
    ("namespace", "{% set ns = namespace(found=false, n=0, items=[]) %}{% for m in messages %}"
                  "{% if m.role == 'user' %}{% set ns.found = true %}{% set ns.n = ns.n + 1 %}"
                  "{% set ns.items = ns.items + [m.role] %}{% endif %}{% endfor %}{{ ns.found }} {{ ns.n }} {{ ns.items }}"),
    ("set_block", "{% set block %}Hello {{ messages[1].role }}\n{% endset %}[{{ block }}]"
                  "{% set up | upper %}shout{% endset %}{{ up }}"),
    ("set_tuple", "{% set a, b = 1, 'two' %}{{ a }}{{ b }}{% set t = (1, 2) %}{{ t }}{{ t[0] }}"),
    ("macro", "{% macro render(m, prefix='>') %}{{ prefix }}{{ m.role }}:{{ m.content | trim }}\n{% endmacro %}"
              "{% for m in messages %}{{ render(m) }}{{ render(m, prefix='#') }}{% endfor %}"),
    ("macro_call_block", "{% macro wrap(tag) %}<{{ tag }}>{{ caller() }}</{{ tag }}>{% endmacro %}"
                         "{% call wrap('b') %}inner {{ messages | length }}{% endcall %}"),
    ("filter_block", "{% filter upper %}hello {{ messages[0].role }}{% endfilter %}"
                     "{% filter indent(2, true) %}a\nb\n\nc{% endfilter %}"),
    ("if_elif_else", "{% for m in messages %}{% if m.role == 'system' %}S{% elif m.role == 'user' %}U"
                     "{% elif m.role == 'tool' %}T{% else %}A{% endif %}{% endfor %}"),
    ("literals", "{{ 'a\\'b' }}{{ \"c\\\"d\" }}{{ 'tab\\tnl\\nuni\\u00e9' }}{{ 42 }}{{ -3.5 }}{{ 1e3 }}"
                 "{{ [1, 'x', none, true, false] }}{{ {'k': 1, 'j': [None, True, False]} }}{{ (1,) }}"
                 "{{ True }}{{ None }}{{ 'adj' 'acent' }}{{ 1_000 }}"),
    ("arithmetic", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }}"
                   " {{ -7 % 3 }} {{ 2 ** 10 }} {{ 1.5 + 1 }} {{ 0.1 + 0.2 }} {{ 'ab' * 3 }} {{ [1] + [2] }}"
                   " {{ 1 / 3 }} {{ 10 / 5 }} {{ 1e20 * 10 }} {{ 2 ** -1 }} {{ 1.0e-7 }}"),
    ("concat_tilde", "{{ 'a' ~ 1 ~ none ~ true ~ undefined_var ~ [1] }}"),
    ("comparisons", "{{ 1 < 2 }}{{ 2 <= 2 }}{{ 'a' < 'b' }}{{ 1 == 1.0 }}{{ 1 != 2 }}{{ 1 < 2 < 3 }}{{ 3 > 2 > 5 }}"
                    "{{ [1, 2] == [1, 2] }}{{ none == none }}{{ 'x' == 1 }}"),
    ("logic", "{{ true and 'x' }}{{ false or 'y' }}{{ not none }}{{ none or [] }}{{ 0 and 1 }}"
              "{{ not (1 and 0) }}{{ '' or 'empty' }}"),
    ("in_not_in", "{{ 'ell' in 'hello' }}{{ 2 in [1, 2] }}{{ 'role' in messages[0] }}{{ 'x' not in messages[0] }}"
                  "{{ 'tool_calls' in messages[2] }}"),
    ("tests", "{% for v in [none, true, 1, 1.5, 'str', [1], {'a': 1}, undefined_thing] %}"
              "{{ v is defined }}{{ v is undefined }}{{ v is none }}{{ v is string }}{{ v is mapping }}"
              "{{ v is iterable }}{{ v is number }}{{ v is integer }}{{ v is float }}{{ v is boolean }}"
              "{{ v is sequence }}{{ v is callable }};{% endfor %}{{ 4 is even }}{{ 3 is odd }}{{ 9 is divisibleby 3 }}"
              "{{ 'a' is equalto 'a' }}{{ 1 is eq 1 }}{{ 2 is gt 1 }}{{ 1 is in [1] }}{{ 'abc' is lower }}"
              "{{ 'ABC' is upper }}{{ 3 is not even }}{{ none is sameas none }}{{ raise_exception is callable }}"),
    ("filter_and_test_names",
     "{% for f in ['abs', 'attr', 'capitalize', 'center', 'count', 'd', 'default', 'dictsort', 'e', 'escape', 'first', "
     "'float', 'format', 'indent', 'int', 'items', 'join', 'last', 'length', 'list', 'lower', 'map', 'max', 'min', "
     "'reject', 'rejectattr', 'replace', 'reverse', 'round', 'safe', 'select', 'selectattr', 'sort', 'string', 'sum', "
     "'title', 'tojson', 'trim', 'unique', 'upper', 'wordcount', 'nosuch'] %}{{ f is filter }}{% endfor %}|"
     "{% for t in ['defined', 'undefined', 'none', 'boolean', 'false', 'true', 'integer', 'float', 'number', 'string', "
     "'mapping', 'iterable', 'sequence', 'callable', 'even', 'odd', 'divisibleby', 'eq', 'equalto', '==', 'ne', '!=', "
     "'lt', '<', 'lessthan', 'le', '<=', 'gt', '>', 'greaterthan', 'ge', '>=', 'in', 'sameas', 'lower', 'upper', "
     "'escaped', 'filter', 'test', 'nosuch'] %}{{ t is test }}{% endfor %}{{ 1 is test }}{{ none is filter }}"),
    ("conditional_expr", "{{ 'yes' if messages else 'no' }}{{ 'a' if false }}|{{ 1 if none else 2 if true else 3 }}"),
    ("attr_item_access", "{{ messages[0].role }}{{ messages[0]['role'] }}{{ messages[0].missing }}"
                         "{{ messages[0]['missing'] }}{{ messages[-1].content }}{{ messages[1].content[0] }}"
                         "{{ messages.0.role }}{{ messages[99] }}{{ messages[2]['tool_calls'][0]['function']['name'] }}"),
    ("slicing", "{{ messages[1:3] | map(attribute='role') | list }}{{ 'abcdef'[::-1] }}{{ 'abcdef'[1:-1] }}"
                "{{ [1, 2, 3, 4, 5][::2] }}{{ [1, 2, 3, 4, 5][-2:] }}{{ [1, 2, 3, 4, 5][::-2] }}{{ 'héllo'[1:3] }}"
                "{{ [1, 2, 3][5:] }}{{ [1, 2, 3][3:0:-1] }}{{ 'abc'[:] }}"),
    ("filters_string", "{{ messages[0].content | trim }}|{{ 'aBc dEf' | upper }}{{ 'aBc' | lower }}"
                       "{{ 'hello world' | capitalize }}{{ 'hello wORLD-x (y' | title }}{{ 'a-b-c' | replace('-', '+') }}"
                       "{{ 'aaa' | replace('a', 'b', 2) }}{{ 'one two  three' | wordcount }}{{ 3 | string }}"
                       "{{ 'x' | safe }}{{ 'xxhixx' | trim('x') }}"),
    ("filters_length", "{{ messages | length }}{{ messages | count }}{{ 'héllo' | length }}{{ messages[0] | length }}"
                       "{{ undefined_x | length }}"),
    ("filters_tojson", "{{ messages[2].tool_calls | tojson }}\n{{ tools | tojson(indent=2) }}\n"
                       "{{ messages[1] | tojson(separators=(',', ':')) }}\n{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}"
                       "{{ 'é\"\\\\\\n\\t\\u0001' | tojson }}{{ 1.0 | tojson }}{{ none | tojson }}{{ [] | tojson(indent=4) }}"
                       "{{ {} | tojson }}{{ messages[4].ratio | tojson }}"),
    ("filters_join_map", "{{ messages | map(attribute='role') | join(', ') }}{{ ['a', 'b'] | map('upper') | join }}"
                         "{{ messages | join('|', attribute='role') }}{{ [1, 2] | join('-') }}"
                         "{{ messages | map(attribute='nothing', default='d') | list }}"),
    ("filters_select", "{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | list }}"
                       "{{ messages | rejectattr('role', 'in', ['user', 'tool']) | map(attribute='role') | list }}"
                       "{{ messages | selectattr('tool_calls', 'defined') | list | length }}"
                       "{{ messages | selectattr('tool_calls') | list | length }}{{ [0, 1, 2, 3] | select('odd') | list }}"
                       "{{ [0, 1, '', 'x'] | select | list }}{{ [1, 2, 3] | reject('even') | list }}"),
    ("filters_first_last", "{{ messages | first | tojson }}{{ (messages | last).role }}{{ [] | first }}"
                           "{{ 'abc' | first }}{{ 'abc' | last }}"),
    ("filters_default", "{{ nothing | default('dflt') }}{{ nothing | d('d2') }}{{ '' | default('e', true) }}"
                        "{{ '' | default('e') }}{{ none | default('n') }}{{ messages[0].missing | default('m') }}"),
    ("filters_numbers", "{{ '42' | int }}{{ '4.7' | int }}{{ 'x' | int }}{{ 'x' | int(7) }}{{ 3.9 | int }}"
                        "{{ '2.5' | float }}{{ 3 | float }}{{ -3 | abs }}{{ -2.5 | abs }}{{ 2.567 | round(2) }}"
                        "{{ 2.5 | round }}{{ 3.5 | round }}{{ 2.1 | round(0, 'ceil') }}{{ 2.9 | round(method='floor') }}"
                        "{{ 7 | round }}{{ [3, 1, 2] | max }}{{ [3, 1, 2] | min }}{{ [1, 2, 3] | sum }}"),
    ("filters_list_sort", "{{ 'abc' | list }}{{ [3, 1, 2] | sort }}{{ ['b', 'A', 'c'] | sort }}"
                          "{{ ['b', 'A', 'c'] | sort(case_sensitive=true) }}{{ [3, 1, 2] | sort(reverse=true) }}"
                          "{{ messages | sort(attribute='role') | map(attribute='role') | list }}"
                          "{{ [1, 2, 3] | reverse | list }}{{ 'abc' | reverse }}{{ ['a', 'A', 'b', 'a'] | unique | list }}"
                          "{{ {'b': 1, 'a': 2, 'C': 0} | dictsort }}{{ {'b': 1, 'a': 2} | dictsort(by='value', reverse=true) }}"),
    ("filters_indent", "{{ 'a\nb\n\nc' | indent }}|{{ 'a\nb' | indent(2, first=true) }}|{{ 'a\n\nb' | indent(1, blank=true) }}"
                       "|{{ 'x' | indent('--', true) }}"),
    ("string_methods", "{{ '  pad  '.strip() }}|{{ '  pad  '.lstrip() }}|{{ '  pad  '.rstrip() }}|{{ 'xxaxx'.strip('x') }}"
                       "{{ 'a,b,,c'.split(',') }}{{ ' a  b c '.split() }}{{ 'a b c'.split(' ', 1) }}"
                       "{{ 'hello'.startswith('he') }}{{ 'hello'.endswith(('x', 'lo')) }}{{ 'hello'.replace('l', 'L') }}"
                       "{{ 'hello world'.title() }}{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}{{ 'hi'.capitalize() }}"
                       "{{ 'hello'.find('l') }}{{ 'hello'.count('l') }}{{ '-'.join(['a', 'b']) }}"),
    ("string_methods_search_and_classes",
     "{{ 'abcabc'.rfind('b') }}{{ 'abcabc'.find('z') }}{{ 'h\u00e9llo'.find('l') }}{{ 'h\u00e9llo'.rfind('l') }}"
     "{{ 'aaa'.count('a') }}{{ 'aaa'.count('aa') }}{{ 'aaa'.count('') }}|{{ 'a\\nb\\r\\nc\\n'.splitlines() }}"
     "{{ ''.splitlines() }}|{{ '123'.isdigit() }}{{ '12a'.isdigit() }}{{ ' \\t'.isspace() }}{{ ''.isspace() }}"
     "{{ 'abc'.isalpha() }}{{ 'ab1'.isalpha() }}{{ 'ab1'.isalnum() }}{{ 'ab1'.islower() }}{{ '12'.islower() }}"
     "{{ 'AB1'.isupper() }}{{ 'Ab'.isupper() }}"),
    ("dict_methods", "{{ messages[0].get('role') }}{{ messages[0].get('nope') }}{{ messages[0].get('nope', 'dv') }}"
                     "{{ messages[4].items() | list }}{{ messages[4]['score'] + 1 }}"),
    ("none_dropped", "{{ messages[4].extra is defined }}{{ messages[4] | tojson }}"),
    ("globals", "{{ range(3) | list }}{{ range(1, 7, 2) | list }}{{ dict(a=1, b='x') }}"
                "{{ namespace(a=1).a }}{{ bos_token }}{{ eos_token }}{{ add_generation_prompt }}{{ tools | length }}"
                "{{ documents }}"),
    ("strftime", "{{ strftime_now('%Y') | length }}"),
    ("loop_cycle_prev", "{% for m in messages %}{{ loop.cycle('odd', 'even') }}{{ loop.previtem.role if not loop.first }}"
                        "{{ loop.nextitem.role if not loop.last }};{% endfor %}"),
    ("render_values", "{{ none }}{{ true }}{{ 1.0 }}{{ 100.0 }}{{ 1e16 }}{{ 1e-5 }}{{ 0.5 }}{{ [1.0, 'a\\'b', \"q\\\"\"] }}"
                      "{{ {'a': none} }}{{ messages[2].tool_calls[0].function.arguments }}"),
    ("raise_exception", "{% if messages | length > 2 %}{{ raise_exception('Too many: ' ~ messages | length) }}{% endif %}"),
    ("undefined_attr_error", "{{ undefined_thing.attr }}"),
    ("list_append_unsafe", "{% set l = [] %}{{ l.append(1) }}{{ l }}"),
    ("qwen3_style_reverse_scan", "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}"
                                 "{%- for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 %}"
                                 "{%- if ns.multi_step_tool and message.role == 'user' and not(message.content.startswith('<tool_response>')"
                                 " and message.content.endswith('</tool_response>')) %}{%- set ns.multi_step_tool = false %}"
                                 "{%- set ns.last_query_index = index %}{%- endif %}{%- endfor %}{{ ns.last_query_index }}"),
    ("content_parts", "{% set m = {'content': [{'type': 'text', 'text': 'hi'}, {'type': 'image'}]} %}"
                      "{% if m.content is string %}{{ m.content }}{% else %}{% for p in m.content %}"
                      "{% if p.type == 'text' %}{{ p.text }}{% elif p.type == 'image' %}<img>{% endif %}{% endfor %}{% endif %}"),
    ("unicode_whitespace", "[{{ '\u00a0\u3000 x y\u2003' | trim }}]{{ '\u00a0a\u2002b '.split() }}[{{ ' \u00a0z'.lstrip() }}]"
                           "{{ 'ééaé'.strip('é') }}"),
    ("tojson_ensure_ascii", "{{ {'k': 'é日本🙂\u007f'} | tojson(ensure_ascii=true) }}{{ 'é\u007f' | tojson }}"),
    ("percent_format", "{{ '%s-%d-%r-%%-%.2f' % ('a', 3, 'b', 2.5) }}{{ 'x=%s' % 1 }}"),
    ("str_format", "{{ '{} and {}'.format('a', 1) }}{{ '{0}{1}{0}'.format('x', 'y') }}{{ '{n}!{{'.format(n=5) }}"),
    ("undefined_ops", "{{ undefined_v == none }}{{ undefined_v != 1 }}{{ undefined_v | string }}{{ undefined_v | list }}"
                      "{{ undefined_v | join }}{{ (undefined_v | first) is defined }}{{ undefined_v | trim }}"),
    ("macro_recursive", "{% macro t(v) %}{% if v is mapping %}{% for k, x in v | items %}{{ k }}:{{ t(x) }},{% endfor %}"
                        "{% elif v is string %}s{% elif v is iterable %}[{% for x in v %}{{ t(x) }}{% endfor %}]{% else %}{{ v }}"
                        "{% endif %}{% endmacro %}{{ t(tools[0]) }}"),
    ("precedence", "{{ messages | length > 2 }}{{ not 1 is defined }}{{ -1 | abs }}{{ 'a' ~ 'b' if false else 'c' }}"
                   "{{ 1 + 2 * 3 ** 2 }}{{ (1 + 2) * 3 }}{{ 'x' in 'xy' and 2 > 1 }}{{ 10 - 2 - 3 }}{{ 2 ** 3 ** 2 }}"
                   "{{ 8 / 2 / 2 }}{{ 1 if 0 else 2 if 0 else 3 }}"),
    ("test_args_parens", "{{ 4 is divisibleby(2) }}{{ 'a' is sameas('a') }}{{ messages | selectattr('role', '==', 'user') | list | length }}"
                         "{{ messages | selectattr('role', 'ne', 'user') | list | length }}"),
    ("trailing_commas", "{{ [1, 2,] }}{{ {'a': 1,} }}{{ (1, 2,) }}{% set a, b = [3, 4] %}{{ b }}"),
    ("misc_values", "{{ true + 1 }}{{ 7.0 // 2 }}{{ [1.5, 1e-07, 1e22, -0.0] }}{{ (1, 2) + (3,) }}{{ {'a': 1}.items() | list }}"
                    "{{ [1, 2] | map('string') | join }}{{ ['1', '2'] | map('int') | sum }}{{ [' a '] | map('trim') | list }}"
                    "{{ 12345678901234 }}{{ 3.0 }}{{ 2.50 }}{{ 1/7 }}{{ 123456789.123 }}"),
    ("loop_misc", "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{{ loop.depth }}{% endfor %}"
                  "{% for m in messages %}{% set role = m.role | upper %}{{ role[0] }}{% endfor %}"
                  "{% for x in messages[1:messages | length - 1] %}{{ x.role }}{% endfor %}"),
    ("whitespace_macro", "  {%- macro m() -%}\n   x   \n  {%- endmacro -%}\n  [{{ m() }}]\n  {% for i in [1] %}\n    {{ i }}\n  {% endfor %}\n"),
    ("content_join", "{%- for message in messages %}{%- set content = message.content if message.content is string else "
                     "message.content | map(attribute='text') | join('') %}{{ content | length }};{% endfor %}"),
    ("with_block", "{% set a = 'outer' %}{% with a = 'inner', b = a %}{{ a }}{{ b }}{% endwith %}{{ a }}{{ b is defined }}"),
    ("format_filter", "{{ '%s-%s' | format('a', 1) }}{{ '%s' | format((1, 2)) }}{{ '%d%%' | format(50) }}"),
]

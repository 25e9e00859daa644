"""How an answer is made when the model is not the whole story.

- ``question``: what a question asks for (the kind of value, the names and years it hangs on);
- ``extractive``: quote the best sentences of the sources (no model call), or say "not found";
- ``relevance``: whether the sources have anything to do with the question at all;
- ``curated``: operators' verbatim replies to frequent questions;
- ``glossary``: English-Korean terms for judging sources across languages.
"""

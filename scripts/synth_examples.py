#!/usr/bin/env python3
"""Synthetic labeled examples for measurements that need many of them (e.g. a store holding
20,000): user-like queries built from templates and word lists written here, each with a tier
(small / medium / large, by how much the request asks for) and a category. Deterministic for a
seed; every text is distinct. Not for training or evaluating the router: the labels follow the
templates, not judged outcomes.

Usage: scripts/synth_examples.py [-n 20000] [--seed 12] [--prefix syn] > examples.jsonl
       scripts/synth_examples.py --queries -n 400 > queries.txt   (one short query a line)
(standard library only)."""

import argparse
import json
import random
import sys

WORDS = {
    "lang": ["Python", "Rust", "Go", "TypeScript", "JavaScript", "Java", "C++", "Kotlin", "Ruby",
             "C#", "Swift", "Haskell", "Elixir", "Scala", "PHP", "Bash", "Lua", "Zig"],
    "task": ["reverses a linked list", "parses an ISO 8601 date", "deduplicates a list while keeping order",
             "counts word frequencies in a file", "validates an email address", "flattens a nested list",
             "computes a moving average", "merges two sorted arrays", "checks whether a string is a palindrome",
             "reads a CSV and sums one column", "retries an HTTP call with exponential backoff",
             "finds the longest common prefix", "converts Roman numerals to integers",
             "chunks a list into groups of n", "debounces a function call", "generates a random password",
             "pretty-prints a JSON file", "walks a directory tree and lists large files",
             "implements binary search", "rotates a matrix by 90 degrees"],
    "system": ["a URL shortener", "a chat service for 10 million users", "a rate limiter shared by many API servers",
               "a ride-sharing dispatch system", "a feature-flag service", "an online bookstore's checkout",
               "a metrics pipeline ingesting 1M events per second", "a collaborative document editor",
               "a notification service with email, SMS and push", "a multi-tenant job scheduler",
               "a search engine for internal wikis", "an inventory system for 300 warehouses",
               "a payment ledger with exactly-once semantics", "a video transcoding pipeline",
               "a leaderboard for a mobile game", "a log aggregation platform", "a hotel booking engine",
               "an IoT telemetry backend for 50k devices", "a recommendation service for a news site",
               "a distributed cache in front of PostgreSQL"],
    "concern": ["consistency during network partitions", "cost at 10x today's traffic", "multi-region failover",
                "hot keys", "schema migrations without downtime", "GDPR deletion requests",
                "back-pressure when consumers fall behind", "observability and alerting",
                "idempotent retries", "cold-start latency", "noisy neighbours between tenants"],
    "concept": ["recursion", "Big-O notation", "a hash map", "TCP's three-way handshake", "DNS resolution",
                "garbage collection", "a mutex versus a semaphore", "eventual consistency", "OAuth 2.0",
                "public-key cryptography", "the CAP theorem", "vector databases", "gradient descent",
                "overfitting", "a Bloom filter", "copy-on-write", "database indexes", "CORS",
                "containers versus virtual machines", "the actor model", "JWT tokens", "memoization",
                "compound interest", "inflation", "opportunity cost", "the placebo effect",
                "natural selection", "photosynthesis", "plate tectonics", "the greenhouse effect",
                "supply and demand", "entropy", "the immune response to a vaccine", "black holes",
                "the Doppler effect", "standard deviation", "Bayes' theorem", "p-values"],
    "audience": ["a ten-year-old", "a new hire", "my grandmother", "a product manager", "a first-year student",
                 "a senior engineer", "someone who has never programmed", "a high-school class"],
    "city": ["Lisbon", "Kyoto", "Montreal", "Nairobi", "Oslo", "Buenos Aires", "Hanoi", "Edinburgh",
             "Marrakesh", "Seoul", "Prague", "Cape Town", "Vancouver", "Istanbul", "Lima", "Krakow",
             "Melbourne", "Reykjavik", "Mexico City", "Tbilisi", "Valencia", "Singapore"],
    "country": ["Portugal", "Japan", "Canada", "Kenya", "Norway", "Argentina", "Vietnam", "Scotland",
                "Morocco", "South Korea", "Czechia", "South Africa", "Turkey", "Peru", "Poland",
                "Australia", "Iceland", "Mexico", "Georgia", "Spain", "Chile", "Finland", "Egypt"],
    "target_lang": ["French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Dutch", "Polish",
                    "Korean", "Turkish", "Swedish", "Greek", "Vietnamese", "Indonesian"],
    "phrase": ["where is the train station", "thank you for your help", "I would like the bill, please",
               "see you tomorrow", "how much does this cost", "I am allergic to peanuts",
               "the meeting is moved to Friday", "happy birthday", "could you speak more slowly",
               "my flight was cancelled", "is this seat taken", "good luck with the exam",
               "we are out of milk", "please close the door", "I lost my keys"],
    "doc": ["an apology email to a customer whose order arrived late", "a LinkedIn post announcing a new job",
            "a thank-you note to a colleague who covered my shift", "a reminder email about an unpaid invoice",
            "a short bio for a conference speaker page", "a product description for a bamboo cutting board",
            "an out-of-office reply", "a toast for my sister's wedding", "a cover letter opening paragraph",
            "a message declining a meeting politely", "a tweet about our app's new dark mode",
            "a welcome message for a book club", "a text asking my landlord to fix the heating"],
    "tone": ["friendly", "formal", "concise", "warm", "professional", "playful", "neutral", "confident"],
    "food": ["banana bread", "shakshuka", "a vegetable curry", "pad thai", "lentil soup", "risotto",
             "sourdough pancakes", "chili con carne", "a Greek salad", "miso ramen", "falafel", "tiramisu"],
    "diet": ["vegan", "gluten-free", "low-sodium", "dairy-free", "high-protein", "nut-free"],
    "unit_q": ["5 miles in kilometres", "72 Fahrenheit in Celsius", "3 cups in millilitres",
               "150 pounds in kilograms", "2.5 hours in minutes", "10 gigabytes in megabytes",
               "60 mph in metres per second", "1 acre in square metres", "350 grams in ounces",
               "5 feet 9 inches in centimetres", "40 degrees Celsius in Fahrenheit", "2 litres in pints"],
    "event": ["the fall of the Berlin Wall", "the French Revolution", "the Apollo 11 landing",
              "the invention of the printing press", "the Meiji Restoration", "the Black Death",
              "the Cuban Missile Crisis", "the Industrial Revolution", "the Marshall Plan",
              "the partition of India", "the Treaty of Westphalia", "the dot-com crash"],
    "field": ["a bakery", "a SaaS startup", "a dental clinic", "a bike repair shop", "a small law firm",
              "a nonprofit food bank", "a regional airline", "a hospital network", "a coffee roaster",
              "an online language school", "a municipal water utility", "a fashion e-commerce brand"],
    "dataset": ["monthly sales by region", "customer churn with 40 features", "hourly energy use of 200 buildings",
                "A/B test results with 3 variants", "patient wait times across 12 clinics",
                "survey answers on a 5-point scale", "server response times over a week",
                "housing prices with location and size"],
    "bug": ["a segfault only in release builds", "a deadlock under load", "a memory leak in a long-running worker",
            "a race condition in our cache warm-up", "flaky tests that fail one run in twenty",
            "a timezone bug around daylight saving", "an N+1 query slowing the dashboard",
            "a stack overflow on deeply nested JSON", "wrong totals after a currency conversion",
            "requests hanging after a connection pool is exhausted"],
    "n": [str(x) for x in (3, 5, 7, 10, 12, 15, 20)],
    "num": [str(x) for x in (17, 23, 48, 96, 125, 144, 365, 512, 729, 1024, 2048, 4096)],
    "pct": [str(x) for x in (3, 4.5, 5, 6, 7.25, 8, 12, 15)],
    "years": [str(x) for x in (2, 3, 5, 10, 15, 20, 30)],
    "word": ["ubiquitous", "ephemeral", "serendipity", "pragmatic", "ambivalent", "meticulous",
             "resilient", "candid", "ostensibly", "nuance", "quixotic", "laconic", "gregarious"],
    "book": ["Pride and Prejudice", "1984", "The Great Gatsby", "Moby-Dick", "Don Quixote",
             "One Hundred Years of Solitude", "Crime and Punishment", "The Odyssey", "Frankenstein",
             "Things Fall Apart", "Beloved", "The Left Hand of Darkness"],
    "law_q": ["a tenant's rights when a landlord keeps the deposit", "fair use of song lyrics in a video",
              "a non-compete clause for a remote employee", "liability for a dog bite on my property",
              "data retention duties for a small online shop", "who owns code written by a contractor"],
    "symptom": ["a persistent dry cough", "recurring migraines", "lower back pain after running",
                "trouble sleeping", "heartburn after meals", "seasonal allergies", "a sprained ankle"],
    "goal": ["run a half marathon in 12 weeks", "save for a house deposit in 3 years",
             "learn conversational Spanish by summer", "move our team from Jenkins to GitHub Actions",
             "launch a podcast", "reduce our AWS bill by 30%", "study for the GRE in two months",
             "migrate a monolith to services", "organise a 200-person conference"],
    "shape": ["a circle of radius 7", "a rectangle 12 by 5", "a right triangle with legs 9 and 12",
              "a sphere of radius 3", "a cylinder of radius 2 and height 10", "a regular hexagon of side 4"],
    "proof": ["there are infinitely many primes", "the square root of 2 is irrational",
              "every tree with n nodes has n - 1 edges", "the sum of the first n odd numbers is n squared",
              "a bipartite graph has no odd cycle", "the halting problem is undecidable",
              "every finite integral domain is a field", "the harmonic series diverges"],
}

# (tier, category, template). Small: one fact, one short rewrite, one conversion. Medium: an
# explanation, a function, a summary with some judgment. Large: design, proof, multi-part
# analysis, long plans.
TEMPLATES = [
    ("small", "greeting", "Hi there, how are you today?"),
    ("small", "greeting", "Good morning! Can you help me with something about {concept}?"),
    ("small", "chitchat", "What's a fun fact about {city}?"),
    ("small", "chitchat", "Recommend a book similar to {book}."),
    ("small", "factual", "What is the capital of {country}?"),
    ("small", "factual", "What currency do they use in {country}?"),
    ("small", "factual", "When did {event} happen?"),
    ("small", "factual", "What time zone is {city} in?"),
    ("small", "factual", "Who wrote {book}?"),
    ("small", "factual", "What does the word '{word}' mean?"),
    ("small", "factual", "Give me a synonym for '{word}'."),
    ("small", "math", "What is {num} divided by 4?"),
    ("small", "math", "What is {pct}% of {num}?"),
    ("small", "math", "Is {num} a prime number?"),
    ("small", "math", "What is the area of {shape}?"),
    ("small", "convert", "Convert {unit_q}."),
    ("small", "convert", "What is {unit_q}?"),
    ("small", "translate", "Translate '{phrase}' into {target_lang}."),
    ("small", "translate", "How do you say '{phrase}' in {target_lang}?"),
    ("small", "rewrite", "Make this sound more {tone}: '{phrase}'."),
    ("small", "rewrite", "Fix the grammar: 'me and him goes to {city} every {years} years'."),
    ("small", "creative", "Write a haiku about {city} in the rain."),
    ("small", "creative", "Give me {n} name ideas for {field}."),
    ("small", "writing", "Write {doc} in a {tone} tone, two sentences max."),
    ("small", "advice", "What's a quick {diet} snack I can take to work?"),
    ("small", "advice", "How long should I boil an egg for a soft yolk?"),
    ("small", "coding", "What does the {lang} keyword for a constant look like?"),
    ("small", "coding", "How do I get the length of a list in {lang}?"),
    ("small", "classify", "Is this review positive or negative: 'the {food} was cold and bland'?"),
    ("small", "extract", "Pull the date out of this: 'see you in {city} on March {n}th'."),
    ("medium", "coding", "Write a {lang} function that {task}, with a couple of tests."),
    ("medium", "coding", "Explain what this {lang} snippet does and how to make it faster: a loop that {task}."),
    ("medium", "debugging", "My {lang} program has {bug}. What are the usual causes and how do I narrow it down?"),
    ("medium", "explain", "Explain {concept} to {audience}, with one concrete example."),
    ("medium", "explain", "What is the difference between {concept} and how it is usually taught?"),
    ("medium", "science", "Why does {concept} matter in everyday life? Give three examples."),
    ("medium", "summarize", "Summarise the main themes of {book} in a paragraph and say which still matter today."),
    ("medium", "history", "What were the main causes and consequences of {event}?"),
    ("medium", "writing", "Write {doc} in a {tone} tone, about 150 words."),
    ("medium", "recipe", "Give me a {diet} version of {food} for {n} people, with a shopping list."),
    ("medium", "finance", "If I invest {num} dollars a month at {pct}% a year for {years} years, roughly how much will I have?"),
    ("medium", "finance", "Explain the pros and cons of leasing versus buying a car for {field}."),
    ("medium", "analysis", "I have a spreadsheet of {dataset}. Which charts would show the key trends?"),
    ("medium", "medicine", "What can cause {symptom}, and when should I see a doctor?"),
    ("medium", "law", "In general terms, what should I know about {law_q}?"),
    ("medium", "planning", "Make a {n}-day itinerary for {city} on a budget."),
    ("medium", "math", "Solve for x: {n}x + {num} = {pct}x - 3, and show the steps."),
    ("medium", "classify", "Sort these {n} support tickets for {field} into bug, billing or feature request, and explain each choice."),
    ("medium", "rewrite", "Rewrite this paragraph about {concept} so {audience} can follow it, keeping every fact."),
    ("medium", "translate", "Translate a short {tone} email to a supplier in {country} into {target_lang}, and note any cultural pitfalls."),
    ("large", "system_design", "Design {system}. Cover the data model, APIs, scaling, and {concern}."),
    ("large", "system_design", "We run {system} on one PostgreSQL box. Propose a migration plan that handles {concern}, with the risks of each step."),
    ("large", "system_design", "Compare three architectures for {system} and recommend one, weighing {concern} and team size."),
    ("large", "proof", "Prove that {proof}, then explain the key idea of the proof intuitively."),
    ("large", "math", "Derive the expected number of coin flips to see {n} heads in a row, and verify it with a {lang} simulation."),
    ("large", "coding", "Implement an LRU cache with TTLs in {lang}, thread-safe, with tests and a complexity analysis."),
    ("large", "coding", "Write a {lang} library that {task}, designed for a 1GB input that does not fit in memory, and explain the trade-offs."),
    ("large", "debugging", "Production incident: {system} shows {bug} after a deploy. Walk me through a full investigation plan and the likely root causes."),
    ("large", "analysis", "Given {dataset}, design an analysis to find what drives the outcome, including confounders, the models to fit and how to validate them."),
    ("large", "analysis", "Write a detailed business case for {field} to adopt {concept}-based tooling, with costs, risks and a {years}-year projection."),
    ("large", "planning", "Build a week-by-week plan to {goal}, with milestones, risks and how to adjust if I fall behind."),
    ("large", "strategy", "I run {field}. Draft a {years}-year strategy to grow revenue {n}x, with the assumptions behind each number."),
    ("large", "law", "Analyse {law_q} under EU and US law, compare the two, and draft a clause that would hold up in both."),
    ("large", "medicine", "Summarise the current evidence on treatments for {symptom}, comparing efficacy, side effects and the quality of the studies."),
    ("large", "writing", "Write a {n}-page short story set in {city} during {event}, with three characters and a twist ending."),
    ("large", "research", "Write a literature-review style overview of {concept}: history, competing explanations, open questions, and key references."),
    ("large", "agentic", "Plan and then carry out, step by step, a refactor of a {lang} codebase that {task}, keeping the public API stable."),
    ("large", "reasoning", "Three friends split a bill for {food} in {city}; given the clues I'll paste, work out who paid what and explain each deduction."),
    ("large", "education", "Create a full {n}-week course on {concept} for {audience}: syllabus, exercises, and an exam with model answers."),
]

OPENERS = ["", "", "", "Quick question: ", "Hi! ", "Hey, ", "Please help: ", "Could you help me? ",
           "I'm stuck. ", "For work: ", "Hello, "]
CLOSERS = {
    "small": ["", "", "", " Thanks!", " Just the answer, please.", " Keep it short.", " Thank you."],
    "medium": ["", "", " Thanks.", " Use bullet points.", " Keep it under 300 words.", " Be specific."],
    "large": ["", "", " Be thorough.", " Show your reasoning.", " Use headings.", " Cite assumptions explicitly."],
}

SHORT = [
    "what is the capital of {country}", "translate '{phrase}' to {target_lang}", "convert {unit_q}",
    "explain {concept} briefly", "write a {lang} function that {task}", "design {system}",
    "prove that {proof}", "why does my {lang} app have {bug}", "{n} ideas for {field}",
    "recipe for {diet} {food}", "summarise {book}", "when was {event}",
]


def fill(template, rng):
    out, rest = [], template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        key, _, rest = tail.partition("}")
        out.append(head)
        out.append(rng.choice(WORDS[key]))
    out.append(rest)
    return "".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20000)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--prefix", default="syn")
    p.add_argument("--queries", action="store_true", help="short unlabeled queries, one a line")
    args = p.parse_args()
    rng = random.Random(args.seed)
    seen = set()
    tries = 0
    while len(seen) < args.n:
        tries += 1
        if tries > args.n * 200:
            sys.exit(f"only {len(seen)} distinct texts after {tries} tries: widen the word lists")
        if args.queries:
            text = fill(rng.choice(SHORT), rng)
            if text in seen:
                continue
            seen.add(text)
            print(text)
            continue
        tier, category, template = rng.choice(TEMPLATES)
        opener, body = rng.choice(OPENERS), fill(template, rng)
        if opener.endswith(", "):
            body = body[0].lower() + body[1:]
        text = opener + body + rng.choice(CLOSERS[tier])
        if text in seen:
            continue
        seen.add(text)
        print(json.dumps({"id": f"{args.prefix}-{len(seen):06d}", "text": text, "tier": tier, "category": category}))


if __name__ == "__main__":
    main()

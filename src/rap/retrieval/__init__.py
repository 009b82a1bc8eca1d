"""Retrieval: which remembered concepts a query image or text refers to, each labelled a match or not."""

from rap.retrieval.decision import OperatingPoint
from rap.retrieval.retriever import Retrieval, RetrievedConcept, Retriever
from rap.retrieval.text import candidate_names

__all__ = ["OperatingPoint", "Retrieval", "RetrievedConcept", "Retriever", "candidate_names"]

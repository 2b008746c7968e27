// Vite's module types (CSS imports) for the type checker.
/// <reference types="vite/client" />

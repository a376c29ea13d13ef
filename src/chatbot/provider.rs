//! Model providers over HTTP: OpenAI-compatible chat completions (OpenAI, Groq, Together,
//! Mistral, Ollama, LocalAI, vLLM…), Anthropic Messages and Google Gemini generateContent.
//! Each provider has its base URL, key, timeout, retries on 429/5xx with backoff (never
//! sooner than Retry-After) and a concurrency limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use super::session::{BotAnswer, BotCall, Role};
use crate::config::{AiSettings, ProviderKind, ProviderSettings};

const HANDOFF_TOOL: &str = "handoff";
const HANDOFF_HELP: &str =
    "Hand the conversation to a human agent when you cannot help or the customer asks for one.";

struct Provider {
    settings: ProviderSettings,
    permits: Arc<Semaphore>,
}

/// The configured providers, shared by every conversation.
#[derive(Clone, Default)]
pub struct Providers {
    client: reqwest::Client,
    by_name: Arc<HashMap<String, Provider>>,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    message: String,
    retry: bool,
    retry_after: Option<Duration>,
}

impl Providers {
    pub fn new(ai: &AiSettings) -> Result<Providers, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()?;
        let by_name = ai
            .providers
            .iter()
            .map(|(name, p)| {
                (
                    name.clone(),
                    Provider {
                        settings: p.clone(),
                        permits: Arc::new(Semaphore::new(p.concurrency.max(1))),
                    },
                )
            })
            .collect();
        Ok(Providers {
            client,
            by_name: Arc::new(by_name),
        })
    }

    /// Make the call (retrying what may succeed); never fails: a failure is an answer with
    /// `error` set.
    pub async fn call(&self, call: &BotCall) -> BotAnswer {
        let started = Instant::now();
        let failed = |message: String| BotAnswer {
            id: call.id.clone(),
            text: None,
            handoff: false,
            tokens_in: 0,
            tokens_out: 0,
            latency_ms: started.elapsed().as_millis() as u64,
            error: Some(message),
        };
        let Some(p) = self.by_name.get(&call.provider) else {
            return failed(format!("provider `{}` is not configured", call.provider));
        };
        let Ok(_permit) = p.permits.acquire().await else {
            return failed("provider closed".into());
        };
        let mut attempt = 0;
        loop {
            match self.attempt(&p.settings, call).await {
                Ok(mut ans) => {
                    ans.latency_ms = started.elapsed().as_millis() as u64;
                    return ans;
                }
                Err(f) if f.retry && attempt < p.settings.max_retries => {
                    let wait = crate::domain::backoff(
                        Duration::from_millis(250),
                        Duration::from_secs(10),
                        attempt,
                        f.retry_after,
                    );
                    tracing::debug!(provider = %call.provider, error = %f.message, ?wait, "Model call failed; retrying.");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(f) => return failed(f.message),
            }
        }
    }

    async fn attempt(&self, p: &ProviderSettings, call: &BotCall) -> Result<BotAnswer, Failure> {
        let base = p.base_url.trim_end_matches('/');
        let key = p.api_key.expose_secret();
        let req = match p.kind {
            ProviderKind::Openai => {
                let mut messages = vec![json!({"role": "system", "content": call.system})];
                messages.extend(call.messages.iter().map(|t| {
                    json!({"role": match t.role { Role::User => "user", Role::Assistant => "assistant" }, "content": t.text})
                }));
                let mut body = json!({
                    "model": call.model,
                    "messages": messages,
                    "temperature": call.temperature,
                    "max_tokens": call.max_tokens,
                });
                if call.handoff_tool {
                    body["tools"] = json!([{"type": "function", "function": {
                        "name": HANDOFF_TOOL, "description": HANDOFF_HELP,
                        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}
                    }}]);
                }
                let mut r = self
                    .client
                    .post(format!("{base}/chat/completions"))
                    .json(&body);
                if !key.is_empty() {
                    r = r.bearer_auth(key);
                }
                r
            }
            ProviderKind::Anthropic => {
                let messages: Vec<Value> = call
                    .messages
                    .iter()
                    .map(|t| json!({"role": match t.role { Role::User => "user", Role::Assistant => "assistant" }, "content": t.text}))
                    .collect();
                let mut body = json!({
                    "model": call.model,
                    "system": call.system,
                    "messages": messages,
                    "max_tokens": call.max_tokens,
                    "temperature": call.temperature,
                });
                if call.handoff_tool {
                    body["tools"] = json!([{"name": HANDOFF_TOOL, "description": HANDOFF_HELP,
                        "input_schema": {"type": "object", "properties": {"reason": {"type": "string"}}}}]);
                }
                self.client
                    .post(format!("{base}/v1/messages"))
                    .header("x-api-key", key)
                    .header("anthropic-version", "2023-06-01")
                    .json(&body)
            }
            ProviderKind::Gemini => {
                let contents: Vec<Value> = call
                    .messages
                    .iter()
                    .map(|t| json!({"role": match t.role { Role::User => "user", Role::Assistant => "model" }, "parts": [{"text": t.text}]}))
                    .collect();
                let mut body = json!({
                    "systemInstruction": {"parts": [{"text": call.system}]},
                    "contents": contents,
                    "generationConfig": {"temperature": call.temperature, "maxOutputTokens": call.max_tokens},
                });
                if call.handoff_tool {
                    body["tools"] = json!([{"functionDeclarations": [{"name": HANDOFF_TOOL, "description": HANDOFF_HELP,
                        "parameters": {"type": "object", "properties": {"reason": {"type": "string"}}}}]}]);
                }
                self.client
                    .post(format!(
                        "{base}/v1beta/models/{}:generateContent",
                        call.model
                    ))
                    .header("x-goog-api-key", key)
                    .json(&body)
            }
        };
        let resp = req.timeout(p.timeout).send().await.map_err(|e| Failure {
            message: if e.is_timeout() {
                "timeout".into()
            } else {
                format!("request failed: {e}")
            },
            retry: true,
            retry_after: None,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure {
                message: format!("HTTP {}", status.as_u16()),
                retry: status.as_u16() == 429 || status.is_server_error(),
                retry_after,
            });
        }
        let v: Value = resp.json().await.map_err(|e| Failure {
            message: format!("unreadable answer: {e}"),
            retry: false,
            retry_after: None,
        })?;
        Ok(parse_answer(p.kind, &call.id, &v))
    }
}

/// Text, handoff tool call and token counts from a provider's answer.
pub fn parse_answer(kind: ProviderKind, id: &str, v: &Value) -> BotAnswer {
    let u = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let (text, handoff, tokens_in, tokens_out) = match kind {
        ProviderKind::Openai => {
            let msg = v.pointer("/choices/0/message");
            let text = msg
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let handoff = msg
                .and_then(|m| m.get("tool_calls"))
                .and_then(Value::as_array)
                .is_some_and(|calls| {
                    calls.iter().any(|c| {
                        c.pointer("/function/name").and_then(Value::as_str) == Some(HANDOFF_TOOL)
                    })
                });
            (
                text,
                handoff,
                u("/usage/prompt_tokens"),
                u("/usage/completion_tokens"),
            )
        }
        ProviderKind::Anthropic => {
            let parts = v.get("content").and_then(Value::as_array);
            let text: String = parts
                .into_iter()
                .flatten()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n");
            let handoff = parts.into_iter().flatten().any(|p| {
                p.get("type").and_then(Value::as_str) == Some("tool_use")
                    && p.get("name").and_then(Value::as_str) == Some(HANDOFF_TOOL)
            });
            let text = (!text.is_empty()).then_some(text);
            (
                text,
                handoff,
                u("/usage/input_tokens"),
                u("/usage/output_tokens"),
            )
        }
        ProviderKind::Gemini => {
            let parts = v
                .pointer("/candidates/0/content/parts")
                .and_then(Value::as_array);
            let text: String = parts
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("");
            let handoff = parts.into_iter().flatten().any(|p| {
                p.pointer("/functionCall/name").and_then(Value::as_str) == Some(HANDOFF_TOOL)
            });
            let text = (!text.is_empty()).then_some(text);
            (
                text,
                handoff,
                u("/usageMetadata/promptTokenCount"),
                u("/usageMetadata/candidatesTokenCount"),
            )
        }
    };
    BotAnswer {
        id: id.to_string(),
        text,
        handoff,
        tokens_in,
        tokens_out,
        latency_ms: 0,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_the_three_apis_are_read() {
        let o = parse_answer(
            ProviderKind::Openai,
            "c",
            &json!({"choices": [{"message": {"content": "Hi", "tool_calls": [{"function": {"name": "handoff"}}]}}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 3}}),
        );
        assert_eq!(
            (o.text.as_deref(), o.handoff, o.tokens_in, o.tokens_out),
            (Some("Hi"), true, 12, 3)
        );
        let a = parse_answer(
            ProviderKind::Anthropic,
            "c",
            &json!({"content": [{"type": "text", "text": "Hello"}], "usage": {"input_tokens": 5, "output_tokens": 2}}),
        );
        assert_eq!(
            (a.text.as_deref(), a.handoff, a.tokens_in),
            (Some("Hello"), false, 5)
        );
        let g = parse_answer(
            ProviderKind::Gemini,
            "c",
            &json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "handoff"}}]}}],
                    "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 0}}),
        );
        assert_eq!((g.text, g.handoff, g.tokens_in), (None, true, 7));
    }
}

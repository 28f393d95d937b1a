#!/usr/bin/env bash
# Send a sample event file to a running `flowrun serve`, signed as Shopify signs it.
# usage: examples/send-webhook.sh [FILE] [TOPIC]   (secret from $SHOPIFY_WEBHOOK_SECRET)
set -euo pipefail
file=${1:-"$(dirname "$0")/events/shopify/checkouts/create.json"}
topic=${2:-checkouts/create}
secret=${SHOPIFY_WEBHOOK_SECRET:?set SHOPIFY_WEBHOOK_SECRET to the secret flowrun serve uses}
signature=$(openssl dgst -sha256 -hmac "$secret" -binary < "$file" | base64)
curl -sS -X POST "http://${FLOWRUN_HOST:-127.0.0.1}:${FLOWRUN_PORT:-8787}/webhooks/shopify" \
  -H "Content-Type: application/json" \
  -H "X-Shopify-Topic: $topic" \
  -H "X-Shopify-Shop-Domain: ${SHOPIFY_SHOP:-knit-and-co.myshopify.com}" \
  -H "X-Shopify-Hmac-Sha256: $signature" \
  -H "X-Shopify-Webhook-Id: ${WEBHOOK_ID:-$(date +%s%N)}" \
  -H "X-Shopify-Triggered-At: $(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --data-binary @"$file"
echo

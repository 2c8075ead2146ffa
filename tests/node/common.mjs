// Shared by the scripts here: a client for the URL given as the first argument, and one
// JSON line on stdout with what happened (an Ollama error as {"error", "status_code"}).
import { Ollama } from 'ollama'

export const client = new Ollama({ host: process.argv[2] })
export const MODEL = process.argv[3] || 'llama3.2'

export async function report(run) {
  try {
    console.log(JSON.stringify(await run()))
  } catch (err) {
    console.log(JSON.stringify({ error: err.error ?? err.message, status_code: err.status_code ?? null, name: err.name }))
  }
}
